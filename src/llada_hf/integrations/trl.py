"""TRL's trainers refuse our models instead of silently training the wrong objective.

TRL's trainers compute their own losses from the model's logits as if it were autoregressive: `SFTTrainer` a
next-token cross-entropy (labels shifted by one), `DPOTrainer`, `GRPOTrainer`, `KTOTrainer`, ... sums of next-token
log-probabilities. Our models' logits at position `i` predict token `i` itself (masked diffusion), so these trainers
would run without an error and train nonsense; the masked-diffusion loss and its label checks of the model's
`forward` are never reached.

Every TRL trainer that tags the model it trains (all of `trl.trainer`: SFT, DPO, GRPO, KTO, RLOO, reward,
distillation, and most experimental ones) calls `model.add_model_tags(trainer._tag_names)` while it is constructed,
with `"trl"` among the tags. Our models' `add_model_tags` passes the tags to [`refuse_trl_trainer`], which raises
there, also through a PEFT wrapper (`PeftModel` forwards the call). The stock `transformers.Trainer` and
`llada_hf.training.preference.DiffusionDPOTrainer` never call it. A few experimental TRL trainers do not tag the model
(e.g. `A2POTrainer`, the async ones): they are not supported either.

What to use instead:
- supervised fine-tuning: the stock `transformers.Trainer` with `llada_hf.training.DataCollatorForDiffusionSFT`
  (`DataCollatorForBlockDiffusion` for block diffusion);
- DPO: `llada_hf.training.preference.DiffusionDPOTrainer` with `DataCollatorForDiffusionPreference` (DPO on ELBO
  estimates).
"""

TRL_TAG = "trl"


def refuse_trl_trainer(model, tags: list[str] | str) -> None:
    """Raises a `ValueError` naming the alternatives if `tags` are those a TRL trainer puts on the model it trains."""
    tags = [tags] if isinstance(tags, str) else list(tags)
    if TRL_TAG not in tags:
        return
    trainer = ", ".join(repr(tag) for tag in tags if tag != TRL_TAG) or "unknown"
    raise ValueError(
        f"TRL's trainers cannot train {type(model).__name__} (TRL trainer tagged {trainer}): {type(model).__name__} is "
        "a masked-diffusion model, whose logits at position i predict token i itself, while TRL computes its own "
        "next-token losses (SFT) or next-token log-probabilities (DPO, GRPO, KTO, ...), which would train the wrong "
        "objective without any error. For supervised fine-tuning, use the stock `transformers.Trainer` with "
        "`llada_hf.training.DataCollatorForDiffusionSFT` (or `DataCollatorForBlockDiffusion`); for DPO, use "
        "`llada_hf.training.preference.DiffusionDPOTrainer` with `DataCollatorForDiffusionPreference`. Other TRL "
        "trainers (GRPO, KTO, RLOO, reward, ...) are not supported."
    )


__all__ = ["refuse_trl_trainer"]

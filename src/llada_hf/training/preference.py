"""Preference optimisation of masked-diffusion LMs: DPO on ELBO estimates (LLaDA 1.5's VRPO, LLaDA2.0's DPO).

A diffusion LM has no exact sequence log-likelihood, so DPO uses Monte-Carlo ELBO estimates
(`llada_hf.training.likelihood`) in its place:

    loss = -log sigmoid(beta * [(B_pi(y_w) - B_ref(y_w)) - (B_pi(y_l) - B_ref(y_l))])

The variance reduction of VRPO: several draws per sequence with stratified mask counts (one draw per noise level),
and the policy and the reference scoring the *same* noised rows (same `t`, same mask), so that the noise largely
cancels in each difference.

```python
>>> collator = DataCollatorForDiffusionPreference(mask_token_id=..., pad_token_id=..., mc_num=8)
>>> trainer = DiffusionDPOTrainer(model=policy, ref_model=None, beta=0.1, args=args, train_dataset=pairs,
...                               data_collator=collator)
```
Dataset rows hold token ids: `prompt_input_ids`, `chosen_input_ids`, `rejected_input_ids`.
"""

import copy
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, Trainer
from transformers.utils import is_peft_available

from .collators import DiffusionDataCollator
from .likelihood import ELBOBatch, build_elbo_batch, draw_answer_masks, negative_elbo_terms


PREFERENCE_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")


@dataclass(kw_only=True)
class DataCollatorForDiffusionPreference(DiffusionDataCollator):
    """
    Noises preference pairs for [`DiffusionDPOTrainer`]: `mc_num` ELBO draws of each chosen and each rejected answer.

    Rows are `prompt + answer`, right-padded with `pad_token_id`; the prompt is never masked and the masked-token
    counts of a sequence's draws are stratified over `1..len(answer)`. The batch has the model inputs
    (`input_ids`, `attention_mask`, `labels`, `p_mask`) and `sequence_index`: which sequence a row scores, `0..B-1`
    for the chosen answers and `B..2B-1` for the rejected ones.

    Args:
        mask_token_id (`int`): the mask token.
        pad_token_id (`int`): fills rows to the batch's longest one (padding keys are masked).
        mc_num (`int`, defaults to 8): draws per answer.
        seed (`int`, *optional*): makes each pair's draws a function of `(seed, pair rank)`.
    """

    pad_token_id: int
    mc_num: int = 8

    def __post_init__(self):
        super().__post_init__()
        if self.mc_num < 1:
            raise ValueError(f"`mc_num` must be at least 1, got {self.mc_num}.")

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        sequences, prompt_lengths, masks, sequence_index = [], [], [], []
        generators = self._generators(len(features))
        for side, column in enumerate(("chosen_input_ids", "rejected_input_ids")):
            for pair, (feature, generator) in enumerate(zip(features, generators)):
                prompt, answer = self._read_pair(feature, column)
                draws = draw_answer_masks(len(prompt), len(answer), self.mc_num, self.mc_num, generator)
                sequences.extend([prompt + answer] * self.mc_num)
                prompt_lengths.extend([len(prompt)] * self.mc_num)
                masks.extend(draws)
                sequence_index.extend([side * len(features) + pair] * self.mc_num)
        batch = build_elbo_batch(sequences, prompt_lengths, masks, self.mask_token_id, self.pad_token_id)
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "labels": batch.labels,
            "p_mask": batch.p_mask,
            "sequence_index": torch.tensor(sequence_index),
        }

    def _read_pair(self, feature: dict, column: str) -> tuple[list[int], list[int]]:
        missing = [name for name in PREFERENCE_COLUMNS if name not in feature]
        if missing:
            raise KeyError(f"Preference features need {list(PREFERENCE_COLUMNS)}; this one lacks {missing}.")
        prompt = torch.as_tensor(feature["prompt_input_ids"], dtype=torch.long).tolist()
        answer = torch.as_tensor(feature[column], dtype=torch.long).tolist()
        if not answer:
            raise ValueError(f"`{column}` is empty: there is nothing to score.")
        if self.mask_token_id in prompt + answer:
            raise ValueError(f"`prompt_input_ids`/`{column}` already hold the mask token {self.mask_token_id}.")
        return prompt, answer


class DiffusionDPOTrainer(Trainer):
    """
    `Trainer` with the DPO loss on ELBO estimates; use it with [`DataCollatorForDiffusionPreference`].

    Args:
        ref_model (`PreTrainedModel`, *optional*): the frozen reference. Default: a frozen copy of `model` as it is
            before training (for a PEFT model: the model with its adapters disabled, no copy).
        beta (`float`, defaults to 0.1): the DPO temperature.
        Other arguments are the `Trainer`'s. The logs gain `rewards/margins` (the mean of the bracket above, without
        `beta`) and `rewards/accuracies` (how often it is positive).
    """

    loss_is_scaled_for_ga = False  # the loss is a per-batch mean: the Trainer divides it by the accumulation steps

    def __init__(self, model=None, ref_model: PreTrainedModel | None = None, beta: float = 0.1, **kwargs):
        if beta <= 0:
            raise ValueError(f"`beta` must be positive, got {beta}.")
        super().__init__(model=model, **kwargs)
        self.beta = beta
        self._uses_disabled_adapter = ref_model is None and _is_peft_model(self.model)
        if ref_model is None and not self._uses_disabled_adapter:
            ref_model = copy.deepcopy(self.model)
        if ref_model is not None:
            ref_model.requires_grad_(False).eval()
            ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        self.ref_model = ref_model
        self._stored_metrics = defaultdict(list)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(PREFERENCE_COLUMNS)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        sequence_index = inputs.pop("sequence_index")
        batch = ELBOBatch(prompt_mask=None, **inputs)
        policy_elbo = self._sequence_elbos(model, batch, sequence_index)
        with torch.no_grad(), self._reference_context(model):
            reference = model if self.ref_model is None else self.ref_model
            reference_elbo = self._sequence_elbos(reference, batch, sequence_index)

        chosen, rejected = (policy_elbo - reference_elbo).chunk(2)
        margins = chosen - rejected
        loss = -F.logsigmoid(self.beta * margins).mean()
        self._stored_metrics["rewards/margins"].append(margins.mean().item())
        self._stored_metrics["rewards/accuracies"].append((margins > 0).float().mean().item())
        return (loss, {"margins": margins}) if return_outputs else loss

    @staticmethod
    def _sequence_elbos(model, batch: ELBOBatch, sequence_index: torch.LongTensor) -> torch.Tensor:
        """The ELBO estimate of each sequence: minus the mean of its rows' weighted masked cross-entropies."""
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        terms = negative_elbo_terms(logits, batch)
        num_sequences = int(sequence_index.max()) + 1
        totals = terms.new_zeros(num_sequences).index_add(0, sequence_index, terms)
        counts = torch.bincount(sequence_index, minlength=num_sequences).to(terms.dtype)
        return -totals / counts

    def _reference_context(self, model):
        if not self._uses_disabled_adapter:
            return nullcontext()
        return self.accelerator.unwrap_model(model).disable_adapter()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._stored_metrics.items():
            logs[name] = sum(values) / len(values)
        self._stored_metrics.clear()
        super().log(logs, start_time)


def _is_peft_model(model) -> bool:
    if not is_peft_available():
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


__all__ = ["DataCollatorForDiffusionPreference", "DiffusionDPOTrainer"]

"""Score answers with a masked-diffusion LM's ELBO (Monte-Carlo estimate of log p(answer | prompt)).

With a checkpoint:

    python examples/likelihood.py --model GSAI-ML/LLaDA-8B-Base --prompt "The capital of France is" \
        --answers " Paris." " Lyon." " Berlin."

Without `--model`, a run needing no download: it trains a tiny LLaDA with the stock `Trainer` to reverse four digits
("3 1 4 1 =" -> "1 4 1 3"; ~10 s on CPU), saves it with its tokenizer (`--output-dir`, default a temporary folder), and
prints how often the ELBO ranks the reversed digits above three random distractors on held-out prompts (100% here):

    python examples/likelihood.py
    LLADA_HF_SMOKE=1 python examples/likelihood.py     # a few steps, to check the script runs
"""

import argparse
import os
import random
import tempfile

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Trainer, TrainingArguments

import llada_hf
from llada_hf.training import DataCollatorForDiffusionSFT
from llada_hf.training.likelihood import estimate_log_likelihood


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
DIGITS = 4
SEPARATOR, EOS, MASK = "=", "<eos>", "<mask>"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the digits, the separator, EOS (also padding) and the mask token."""
    vocab = {str(digit): digit for digit in range(10)} | {SEPARATOR: 10, EOS: 11, MASK: 12}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, mask_token=MASK)


def reversal_example(rng: random.Random) -> tuple[str, str]:
    """A prompt `"d1 d2 d3 d4 ="` and its answer `"d4 d3 d2 d1"`."""
    digits = [str(rng.randrange(10)) for _ in range(DIGITS)]
    return " ".join(digits) + f" {SEPARATOR}", " ".join(reversed(digits))


def train_reversal_model(output_dir: str, steps: int = 400, batch_size: int = 64, seed: int = 0):
    """Trains a tiny LLaDA on digit reversal with `DataCollatorForDiffusionSFT` and saves it with its tokenizer."""
    tokenizer = build_tokenizer()
    rng = random.Random(seed)
    features = []
    for _ in range(steps * batch_size):
        prompt, answer = reversal_example(rng)
        prompt_ids = tokenizer.encode(prompt)
        answer_ids = tokenizer.encode(answer) + [tokenizer.eos_token_id]
        features.append({"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids})

    torch.manual_seed(seed)
    config = llada_hf.LLaDAConfig(
        d_model=64,
        n_heads=4,
        n_kv_heads=4,
        n_layers=2,
        mlp_hidden_size=128,
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        max_sequence_length=64,
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = llada_hf.LLaDAModelLM(config)
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        num_train_epochs=1,
        learning_rate=3e-3,
        warmup_steps=10,
        lr_scheduler_type="cosine",
        logging_steps=100,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        seed=seed,
    )
    collator = DataCollatorForDiffusionSFT(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, seed=seed
    )
    Trainer(model=model, args=args, train_dataset=features, data_collator=collator).train()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return model.eval(), tokenizer


def ranking_accuracy(model, tokenizer, num_prompts=50, num_distractors=3, mc_num=16, seed=1):
    """How often the ELBO ranks the reversed digits first among random distractors (held-out prompts)."""
    rng = random.Random(seed)
    prompts, answers = [], []
    for _ in range(num_prompts):
        prompt, answer = reversal_example(rng)
        distractors = [" ".join(str(rng.randrange(10)) for _ in range(DIGITS)) for _ in range(num_distractors)]
        for candidate in [answer, *distractors]:
            prompts.append(tokenizer.encode(prompt))
            answers.append(tokenizer.encode(candidate) + [tokenizer.eos_token_id])
    scores = estimate_log_likelihood(model, prompts, answers, mc_num=mc_num, batch_size=64, seed=seed)
    scores = scores.view(num_prompts, num_distractors + 1)
    return (scores.argmax(dim=1) == 0).float().mean().item(), scores


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint to score with (default: train a tiny one on a toy task)")
    parser.add_argument("--output-dir", help="where the tiny model is saved (without --model)")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--answers", nargs="+", default=[])
    parser.add_argument("--mc-num", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cfg-scale", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not args.model:
        output_dir = args.output_dir or tempfile.mkdtemp(prefix="llada-likelihood-")
        model, tokenizer = train_reversal_model(output_dir, steps=10 if SMOKE else 400)
        accuracy, _ = ranking_accuracy(model, tokenizer, num_prompts=10 if SMOKE else 50)
        print(f"ELBO ranks the correct answer first on {accuracy:.0%} of held-out prompts")
        print(f"model saved in {output_dir}")
        return
    if not args.answers:
        parser.error("--model needs --answers")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto").to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompt_ids = tokenizer.encode(args.prompt, add_special_tokens=False)
    answers = [tokenizer.encode(answer, add_special_tokens=False) for answer in args.answers]
    scores = estimate_log_likelihood(
        model,
        [prompt_ids] * len(answers),
        answers,
        mc_num=args.mc_num,
        batch_size=args.batch_size,
        cfg_scale=args.cfg_scale,
        seed=args.seed,
    )
    for answer, score in sorted(zip(args.answers, scores.tolist()), key=lambda item: -item[1]):
        print(f"{score:10.3f}  {answer!r}")


if __name__ == "__main__":
    main()

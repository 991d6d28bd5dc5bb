"""Reproduces the tiny instruction-following LLaDA shipped in `llada_hf/bundled/tiny-llada-instruct`.

Three generated tasks with real structure, each with a held-out test set the model never sees in training:

- sorting: "Sort: 9 4 7 1 3" -> "1 3 4 7 9" (3 to 6 digits; the README's demo prompt is held out),
- arithmetic: "What is 38 + 47?" -> "85" (operands below 100; 10% of all operand pairs are held out),
- facts: "Ada lives in Oslo. Ben lives in Rome. Who lives in Rome?" -> "Ben": question answering over 2 to 4
  synthetic facts given in the prompt, asked in both directions (person -> city and city -> person).

The bundled model is trained on sorting alone (`--tasks sorting`, the default): within this project's budget (2 shared
CPU cores, ~20 min) the three-task mixture stayed on its loss plateau (numbers in model_cards/bundled-tiny-llada.md).
`--tasks sorting arithmetic facts` trains on all three, for whoever has more compute.

The tokenizer (word level, one token per digit, built locally with `tokenizers`) and the chat template follow
LLaDA-8B-Instruct (`<|startoftext|>`, `<|start_header_id|>`, `<|end_header_id|>`, `<|eot_id|>`, `<|mdm_mask|>`,
EOS padding). The model is a 2-layer LLaDA trained from scratch with this package's `DataCollatorForDiffusionSFT`
(prompt never masked, EOS padding supervised) and the stock `Trainer`; the script ends by printing the held-out
exact-match accuracy of each task through `model.generate()` with the saved sampler defaults.

    python examples/make_bundled_model.py                      # ~5 min on 2 CPU cores, rewrites the bundled model
    python examples/make_bundled_model.py --output-dir /tmp/m  # writes elsewhere
    LLADA_HF_SMOKE=1 python examples/make_bundled_model.py     # a few steps into a temporary folder
"""

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Trainer, TrainingArguments

from llada_hf import LLaDAConfig, LLaDAModelLM
from llada_hf.training import IGNORE_INDEX, DataCollatorForDiffusionSFT


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "llada_hf" / "bundled" / "tiny-llada-instruct"
DEMO_PROMPT, DEMO_ANSWER = "Sort: 9 4 7 1 3", "1 3 4 7 9"

# The LLaDA-8B-Instruct special tokens and chat template.
SPECIAL_TOKENS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "mask_token": "<|mdm_mask|>",
    "unk_token": "<|unk|>",
}
CHAT_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Words (with their leading space), single digits, newlines and punctuation are tokens; decoding concatenates them.
PRE_TOKENIZER_PATTERN = r" ?[A-Za-z]+| ?[0-9]|\n| ?[^\sA-Za-z0-9]"

NAMES = (
    "Ada Ben Cleo Dan Eva Finn Gus Hana Ivo Jade Kai Lena Milo Nora Omar Pia Quin Rosa Sam Tara Uma Vic Wes Yuri Zoe"
)
CITIES = (
    "Oslo Rome Lima Cairo Quito Perth Riga Kyiv Baku Doha Hanoi Lagos Minsk Nice Porto Sofia Tunis Turin Bern Lyon"
)
NAMES, CITIES = NAMES.split(), CITIES.split()

# Sampler defaults saved in generation_config.json (also used for the evaluation below): every answer fits in 16
# tokens, one token per step, in semi-autoregressive blocks of 2 (on held-out sorts, 77% exact match against 29% for
# one 16-token block, which commits the most confident digits first and repeats them).
GENERATION_DEFAULTS = {
    "max_new_tokens": 16,
    "canvas_length": 16,
    "steps": 16,
    "block_length": 2,
    "remasking": "low_confidence",
}


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def arithmetic_example(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(100), rng.randrange(100)
    return f"What is {a} + {b}?", str(a + b)


def sorting_example(rng: random.Random) -> tuple[str, str]:
    digits = [rng.randrange(10) for _ in range(rng.randint(3, 6))]
    return "Sort: " + " ".join(map(str, digits)), " ".join(map(str, sorted(digits)))


def facts_example(rng: random.Random) -> tuple[str, str]:
    count = rng.randint(2, 4)
    names, cities = rng.sample(NAMES, count), rng.sample(CITIES, count)
    asked = rng.randrange(count)
    facts = " ".join(f"{name} lives in {city}." for name, city in zip(names, cities))
    if rng.random() < 0.5:
        return f"{facts} Where does {names[asked]} live?", cities[asked]
    return f"{facts} Who lives in {cities[asked]}?", names[asked]


TASKS = {"arithmetic": arithmetic_example, "sorting": sorting_example, "facts": facts_example}


def held_out_examples(seed: int, per_task: int) -> tuple[dict[str, list[tuple[str, str]]], set[str]]:
    """`per_task` test examples per task, and every prompt to keep out of training: arithmetic's test examples are
    drawn from 10% of all operand pairs, all of which are held out; sorting's start with the demo prompt."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in range(100) for b in range(100)]
    rng.shuffle(pairs)
    held_out_pairs = pairs[: len(pairs) // 10]
    held_out = {"arithmetic": [(f"What is {a} + {b}?", str(a + b)) for a, b in held_out_pairs]}
    sorts = [(DEMO_PROMPT, DEMO_ANSWER)] + [sorting_example(rng) for _ in range(per_task)]
    held_out["sorting"] = list(dict.fromkeys(sorts))
    held_out["facts"] = list(dict.fromkeys(facts_example(rng) for _ in range(per_task)))
    held_out = {task: examples[:per_task] for task, examples in held_out.items()}
    return held_out, {f"What is {a} + {b}?" for a, b in held_out_pairs}


def training_examples(seed: int, count: int, excluded: set[str], tasks: list[str]) -> list[tuple[str, str]]:
    """`count` examples of `tasks` in equal shares, none of whose prompts is excluded."""
    rng = random.Random(seed)
    examples = []
    while len(examples) < count:
        prompt, answer = TASKS[rng.choice(tasks)](rng)
        if prompt not in excluded:
            examples.append((prompt, answer))
    return examples


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `texts` with the LLaDA-Instruct special tokens and chat template."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    special_tokens = list(SPECIAL_TOKENS.values()) + CHAT_TOKENS
    roles = "system\n\nuser\n\nassistant\n\n"  # the words the chat template adds
    tokenizer.train_from_iterator([roles, *texts], trainers.WordLevelTrainer(special_tokens=special_tokens))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=SPECIAL_TOKENS["eos_token"],  # as in LLaDA: padding is EOS
        additional_special_tokens=CHAT_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=128,
        **SPECIAL_TOKENS,
    )


def chat_prompt_ids(tokenizer: PreTrainedTokenizerFast, prompt: str) -> list[int]:
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)


def sft_feature(tokenizer: PreTrainedTokenizerFast, prompt: str, answer: str) -> dict[str, list[int]]:
    """One SFT example: the chat prompt (labels -100, never masked) and the answer closed by `<|eot_id|>`."""
    prompt_ids = chat_prompt_ids(tokenizer, prompt)
    answer_ids = tokenizer.encode(answer + "<|eot_id|>", add_special_tokens=False)
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


# ---------------------------------------------------------------------------------------------------------------------
# Model, training, evaluation
# ---------------------------------------------------------------------------------------------------------------------


def build_model(tokenizer: PreTrainedTokenizerFast, smoke: bool = False) -> LLaDAModelLM:
    config = LLaDAConfig(
        d_model=64 if smoke else 128,
        n_heads=4,
        n_kv_heads=4,
        n_layers=2,
        mlp_hidden_size=128 if smoke else 512,
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        max_sequence_length=128,
        rope_theta=10000.0,
        weight_tying=False,
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return LLaDAModelLM(config)


@torch.no_grad()
def accuracy(model, tokenizer, examples: list[tuple[str, str]], batch_size: int = 128) -> float:
    """Exact match of the decoded answers (batched, left-padded, saved sampler defaults) over `examples`."""
    model.eval()
    tokenizer.padding_side = "left"
    correct = 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        features = [{"input_ids": chat_prompt_ids(tokenizer, prompt)} for prompt, _ in batch]
        inputs = tokenizer.pad(features, return_tensors="pt")
        sequences = model.generate(**inputs)
        answers = tokenizer.batch_decode(sequences[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(answer.strip() == expected for answer, (_, expected) in zip(answers, batch))
    return correct / len(examples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=None, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=["sorting"], help="tasks to train on")
    parser.add_argument("--train-examples", type=int, default=128_000)
    parser.add_argument("--test-examples", type=int, default=300, help="held-out examples per task")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if SMOKE:
        args.train_examples, args.test_examples = 512, 8
    output_dir = args.output_dir or (Path(tempfile.mkdtemp()) if SMOKE else DEFAULT_OUTPUT)

    torch.manual_seed(args.seed)
    held_out, excluded = held_out_examples(args.seed, args.test_examples)
    excluded |= {prompt for examples in held_out.values() for prompt, _ in examples}
    train = training_examples(args.seed + 1, args.train_examples, excluded, args.tasks)
    tokenizer = build_tokenizer([text for example in train for text in example])
    model = build_model(tokenizer, smoke=SMOKE)
    print(f"vocabulary: {len(tokenizer)} tokens; model: {model.num_parameters() / 1e6:.2f}M parameters")

    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),  # nothing is saved there
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.01,
        logging_steps=100,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=args.seed,
        dataloader_drop_last=True,
    )
    # `eps=0.2`: masking ratios in [0.2, 1] rather than [0.001, 1]; the 1/t loss weights stay below 5, which keeps the
    # gradient of these short answers from being dominated by the rare, nearly unmasked ones.
    collator = DataCollatorForDiffusionSFT(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, eps=0.2
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=[sft_feature(tokenizer, prompt, answer) for prompt, answer in train],
        data_collator=collator,
    )
    start = time.perf_counter()
    trainer.train()
    print(f"training: {(time.perf_counter() - start) / 60:.1f} min")

    model.generation_config.update(**GENERATION_DEFAULTS, eot_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"))
    print(f"{'task':<12}{'held-out exact match':>22}{'examples':>10}")
    for task in args.tasks:
        examples = held_out[task]
        print(f"{task:<12}{accuracy(model, tokenizer, examples):>22.1%}{len(examples):>10}")

    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    print(f"saved to {output_dir}")


if __name__ == "__main__":
    main()

"""How often a left-padded batch gives a row other tokens than the row gets alone, per dtype, family and sampler mode.

`generate()` on a left-padded batch is exact in float64: every row gets the tokens it gets alone
(`modeling_tests/test_bad_inputs.py::test_padded_batch_equals_single_rows_in_float64`). In float32 and bfloat16 it is
not: a row's logits in a batch are computed with other shapes (more key columns, other positions for LLaDA 1.x's left
pads, a larger matrix product), and BLAS/attention kernels round differently for different shapes. Where two
candidates are nearly tied, a greedy choice can flip, and the rest of the answer follows from a different canvas.

This script measures that rate on randomly initialised tiny models of both families (the test fixtures' configs at a
few sizes, initialisation scales and seeds): each batch holds prompts of different lengths, left-padded; every row of
the batched output is compared with the same prompt generated alone, in the same dtype, on the same weights. float64
is the control and must show 0 differing rows.

    python benchmarks/bench_batch_consistency.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_batch_consistency.py --quick    # ~1 minute
"""

import argparse
import copy
import itertools
import time
from pathlib import Path

import torch

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM


FIXTURES = Path(__file__).resolve().parent.parent / "modeling_tests" / "fixtures"
PROMPT_VOCAB = 120  # random prompt tokens stay below the special ids of the fixtures (124-127)
LLADA2_MASK = 127  # the LLaDA2 fixture's config has no mask id

# Model sizes on top of the fixture configs; each is built at two initialisation scales: 0.02 (the fixtures': nearly
# flat logits, confidences ~1/vocab) and 1.0 (peaked logits, confidences spread over (0.3, 1) as in a trained model).
SIZES = {
    "llada": {
        "d32-L2": {},
        "d64-L3": {"d_model": 64, "n_layers": 3, "mlp_hidden_size": 128},
    },
    "llada2": {
        "h32-L2": {},
        "h64-L3": {"hidden_size": 64, "num_hidden_layers": 3, "intermediate_size": 128, "moe_intermediate_size": 32},
    },
}
INIT_SCALES = (0.02, 1.0)

# Sampler modes: generate() keyword arguments. "dialect" calls pass `max_new_tokens` only: the canvas, block and steps
# come from the model's generation config (set in `build_model`).
MODES = {
    "llada": {
        "official": {"gen_length": 16, "steps": 16, "block_length": 8},
        "dialect (max_new_tokens)": {"max_new_tokens": 16},
        "dual cache": {"gen_length": 16, "steps": 16, "block_length": 8, "diffusion_cache": "dual"},
        "threshold 0.9": {"gen_length": 16, "block_length": 8, "parallel_decoding": "threshold", "threshold": 0.9},
    },
    "llada2": {
        "official (no cache)": {"gen_length": 16, "steps": 8, "block_length": 8, "diffusion_cache": "none"},
        "dialect (max_new_tokens)": {"max_new_tokens": 16},
        "threshold 0.9": {"gen_length": 16, "block_length": 8, "parallel_decoding": "threshold", "threshold": 0.9},
        "block cache + threshold 0.95": {"gen_length": 16, "steps": 8, "block_length": 8, "threshold": 0.95},
    },
}
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


def build_model(family: str, size: str, init_scale: float, seed: int, attention: str = "sdpa") -> torch.nn.Module:
    """A random model of `family` from the test fixture's config, resized, with small generation defaults."""
    torch.manual_seed(seed)
    overrides = SIZES[family][size]
    if family == "llada":
        config = LLaDAConfig.from_pretrained(FIXTURES / "llada-tiny-random", init_std=init_scale, **overrides)
        model = LLaDAModelLM(config)
        model.generation_config.update(canvas_length=16, block_length=8, steps=16)
    else:
        config = LLaDA2MoeConfig.from_pretrained(
            FIXTURES / "llada2-moe-tiny-random", initializer_range=init_scale, **overrides
        )
        model = LLaDA2MoeModelLM(config)
        model.generation_config.update(block_length=8, steps=8, mask_token_id=LLADA2_MASK)
    model.set_attn_implementation(attention)
    return model.eval()


def random_batch(generator: torch.Generator, rows: int, max_length: int) -> list[torch.LongTensor]:
    """`rows` random prompts of 1..max_length tokens, not all of the same length."""
    while True:
        lengths = torch.randint(1, max_length + 1, (rows,), generator=generator)
        if len(set(lengths.tolist())) > 1:
            return [torch.randint(0, PROMPT_VOCAB, (int(n),), generator=generator) for n in lengths]


def left_pad(prompts: list[torch.LongTensor], pad: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    width = max(len(p) for p in prompts)
    ids = torch.stack([torch.cat([torch.full((width - len(p),), pad), p]) for p in prompts])
    mask = torch.stack([torch.cat([torch.zeros(width - len(p)), torch.ones(len(p))]) for p in prompts]).long()
    return ids, mask


def differing_tokens(batched_answer: torch.LongTensor, alone_answer: torch.LongTensor, pad: int) -> int:
    """Answer positions where the batched row and the row alone differ (the shorter answer is read as padded)."""
    length = max(len(batched_answer), len(alone_answer))
    batched = torch.nn.functional.pad(batched_answer, (0, length - len(batched_answer)), value=pad)
    alone = torch.nn.functional.pad(alone_answer, (0, length - len(alone_answer)), value=pad)
    return int((batched != alone).sum())


@torch.no_grad()
def compare_batch(model, prompts: list[torch.LongTensor], kwargs: dict) -> list[int]:
    """Differing answer tokens of every row: the left-padded batch against each prompt alone."""
    pad = model.generation_config.pad_token_id
    ids, mask = left_pad(prompts, pad)
    batched = model.generate(ids, attention_mask=mask, **kwargs)
    result = []
    for row, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], **kwargs)[0]
        result.append(differing_tokens(batched[row, ids.shape[1] :], alone[len(prompt) :], pad))
    return result


def run(args) -> dict:
    """{(dtype, family, mode): [differing tokens of every compared row, per batch]}."""
    counts = {}
    generator = torch.Generator().manual_seed(args.prompt_seed)
    for family in args.families:
        for size, init_scale, seed in itertools.product(SIZES[family], INIT_SCALES, range(args.seeds)):
            reference = build_model(family, size, init_scale, seed, args.attention)
            batches = [random_batch(generator, args.rows, args.max_prompt) for _ in range(args.batches)]
            for dtype_name in args.dtypes:
                model = copy.deepcopy(reference).to(DTYPES[dtype_name])  # the same weights in every dtype
                for mode, kwargs in MODES[family].items():
                    for prompts in batches:
                        counts.setdefault((dtype_name, family, mode), []).append(compare_batch(model, prompts, kwargs))
            print(f"  done: {family} {size} init {init_scale} seed {seed}", flush=True)
    return counts


def print_table(counts: dict) -> None:
    header = ("dtype", "family", "mode", "batches", "rows differing", "% rows", "tokens/differing row")
    lines = []
    for (dtype_name, family, mode), batches in counts.items():
        rows = [n for batch in batches for n in batch]
        differing = [n for n in rows if n]
        mean = f"{sum(differing) / len(differing):.1f}" if differing else "-"
        lines.append(
            (dtype_name, family, mode, str(len(batches)), f"{len(differing)} / {len(rows)}",
             f"{100 * len(differing) / len(rows):.1f}", mean)
        )  # fmt: skip
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, one batch per model (~1 minute)")
    parser.add_argument("--seeds", type=int, default=2, help="random models per size and initialisation scale")
    parser.add_argument("--batches", type=int, default=2, help="random padded batches per model")
    parser.add_argument("--rows", type=int, default=4, help="prompts per batch")
    parser.add_argument("--max-prompt", type=int, default=12, help="prompts have 1..max-prompt tokens")
    parser.add_argument("--prompt-seed", type=int, default=0)
    parser.add_argument("--families", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (results may depend on it)")
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.batches = 1, 1
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    counts = run(args)
    models = sum(len(SIZES[f]) for f in args.families) * len(INIT_SCALES) * args.seeds
    print(
        f"\n{models} random models ({args.seeds} seed(s) x sizes {[s for f in args.families for s in SIZES[f]]} x "
        f"init scales {list(INIT_SCALES)}), {args.batches} batches of {args.rows} left-padded prompts "
        f"(1-{args.max_prompt} tokens) each, {args.attention} attention, {args.threads} thread(s), "
        f"{time.perf_counter() - start:.0f} s\n"
    )
    print_table(counts)


if __name__ == "__main__":
    main()

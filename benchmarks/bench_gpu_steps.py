"""Per-step cost of the diffusion sampler's forward passes at released shapes, against the machine's own roofline.

Random weights (no download) at LLaDA-8B shapes (or LLaDA2.0-mini, or a tiny model for a CPU check). For each batch
size and answer length (prompt 128, block 32), one table from one run:

- LLaDA 1.x: the full-canvas step (the official sampler; eager and, with `--compile`, captured by
  `torch.compile(mode="reduce-overhead")`, i.e. CUDA graphs), the prefix-cache step (queries: the active block and
  everything after it; averaged over the blocks), the dual-cache step (queries: the active block) and the static
  dual-cache step (`cache_implementation="static"`; also compiled with `--compile`);
- LLaDA2.0: the uncached step (canvas up to the block end, averaged over blocks), the exact block-cache step and the
  static block-cache step (`cache_implementation="static"`, compiled with `--compile`).

Columns: median latency per step, peak memory of the step, tokens/s of a whole answer decoded with a fixed NFE budget
(`--nfe`; cached modes spend one full-canvas refresh per block), and the step's roofline: the larger of
FLOPs / peak matmul throughput and bytes / peak copy bandwidth, both measured on this machine at start-up, with the
measured latency as a percentage of it (100% = at the roofline). LLaDA2.0's bytes count the routed experts the step
actually uses (`experts/layer`: distinct experts per MoE layer, counted with router hooks on an eager run of the step).

    python benchmarks/bench_gpu_steps.py --device cuda                      # LLaDA-8B shapes, bf16
    python benchmarks/bench_gpu_steps.py --device cuda --model llada2-mini
    python benchmarks/bench_gpu_steps.py --device cuda --compile            # adds the captured steps
    python benchmarks/bench_gpu_steps.py --model tiny --device cpu --dtype float32   # a quick CPU check

`--json PATH` also writes the rows (and the measured peaks) to PATH, rewritten after every row so that a run stopped
part-way keeps what it measured; `benchmarks/gpu/run_all.sh` reads it.
"""

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from llada_hf.generation.caches import BlockCache, DiffusionCacheStrategy, DualCache, PrefixCache
from llada_hf.generation.schedules import AbsoluteBlockSchedule, PromptBlockSchedule
from llada_hf.modeling_llada2_moe import LLaDA2MoeGate


LLADA2_MINI_CONFIG = Path(__file__).parent.parent / "modeling_tests" / "fixtures" / "llada2-mini.config.json"
COMPILE_ERRORS = []  # a compiled step that fails is reported here (and in --json), and the other steps still run


# ---------------------------------------------------------------------------------------------------------------------
# Models and shapes
# ---------------------------------------------------------------------------------------------------------------------


def build_model(name: str, device: str, dtype: torch.dtype):
    if name == "llada-8b":
        config = LLaDAConfig()  # the constructor defaults describe LLaDA-8B
    elif name == "llada2-mini":
        config = LLaDA2MoeConfig(**json.loads(LLADA2_MINI_CONFIG.read_text()))
    elif name == "tiny":
        config = LLaDAConfig(
            d_model=128, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=256, vocab_size=512,
            embedding_size=512, max_sequence_length=2048, mask_token_id=511, eos_token_id=510, pad_token_id=510,
        )  # fmt: skip
    elif name == "tiny-llada2":
        config = LLaDA2MoeConfig(
            vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8, num_experts_per_tok=2,
            n_group=2, topk_group=1, max_position_embeddings=2048,
        )  # fmt: skip
    else:
        raise ValueError(f"Unknown --model {name!r}.")
    model_class = LLaDA2MoeModelLM if isinstance(config, LLaDA2MoeConfig) else LLaDAModelLM
    return instantiate(model_class, config, device, dtype)


def instantiate(model_class, config, device: str, dtype: torch.dtype):
    """`model_class(config)` with random weights made directly on `device` in `dtype`, in eval mode."""
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model.eval()


def step_cost(
    model, query_tokens: int, key_tokens: int, logit_tokens: int, batch: int, dtype_bytes: int, experts_read=None
):
    """`(FLOPs, bytes)` of one forward: matmuls over the weights each token uses, attention scores and values, the LM
    head on the logit columns; bytes = weights read once + keys/values read + the logits written. LLaDA2.0:
    `experts_read` is the mean number of distinct routed experts per MoE layer the step used (measured by
    `routed_experts`); without it, the upper bound min(all, tokens * top-k)."""
    config = model.config
    hidden = model.get_input_embeddings().weight.shape[1]
    vocab = model.get_output_embeddings().weight.shape[0]
    layers = config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_dim = config.num_attention_heads * head_dim
    kv_dim = config.num_key_value_heads * head_dim
    total = sum(p.numel() for p in model.parameters())
    embedding, head = hidden * vocab, hidden * vocab
    if isinstance(config, LLaDA2MoeConfig):
        # Per token: attention, dense layers, and the routed + shared experts it uses; the weights read per step are
        # those of the experts any token of the step uses (upper bound: min(all, tokens * top-k)).
        attention = layers * hidden * (q_dim + 2 * kv_dim + q_dim)
        dense_layers = config.first_k_dense_replace
        moe_layers = layers - dense_layers
        dense = dense_layers * 3 * hidden * config.intermediate_size
        expert = 3 * hidden * config.moe_intermediate_size
        active_experts = config.num_experts_per_tok + config.num_shared_experts
        per_token = attention + dense + moe_layers * (active_experts * expert + hidden * config.num_experts)
        if experts_read is None:
            experts_read = min(config.num_experts, batch * query_tokens * config.num_experts_per_tok)
        routed = moe_layers * config.num_experts * expert
        weights_read = total - embedding - routed + moe_layers * experts_read * expert
    else:
        per_token = total - embedding - head
        weights_read = total - embedding
    flops = 2 * batch * query_tokens * per_token + 2 * batch * logit_tokens * head
    flops += 4 * batch * layers * query_tokens * key_tokens * q_dim  # scores and weighted values
    kv_bytes = 2 * batch * layers * key_tokens * kv_dim * dtype_bytes
    logits_bytes = batch * logit_tokens * vocab * 4
    return flops, weights_read * dtype_bytes + kv_bytes + logits_bytes


# ---------------------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------------------


def routed_experts(model, run_step) -> float:
    """Mean number of distinct routed experts per MoE layer that the routers pick during `run_step()` (an eager
    forward: the weights a grouped-GEMM step actually reads)."""
    counts = []
    gates = [module for module in model.modules() if isinstance(module, LLaDA2MoeGate)]
    handles = [gate.register_forward_hook(lambda m, a, out: counts.append(out[2].unique().numel())) for gate in gates]
    try:
        run_step()
    finally:
        for handle in handles:
            handle.remove()
    return statistics.mean(counts)


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device, repeats, warmup=2):
    """Median seconds per call and peak memory (bytes, CUDA only) of `fn()`."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return statistics.median(times), peak


def machine_peaks(device, dtype):
    """Measured matmul FLOP/s (square `dtype` matmul) and copy bandwidth (bytes read + written per second)."""
    size = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds, _ = timed(lambda: a @ b, device, repeats=10)
    flops = 2 * size**3 / seconds
    numel = (1 << 28) if device.startswith("cuda") else (1 << 24)
    src = torch.empty(numel, device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    seconds, _ = timed(lambda: dst.copy_(src), device, repeats=10)
    return flops, 2 * numel / seconds


class Canvas:
    """The sampler's canvas and model inputs for `batch` prompts of `prompt` tokens and `answer` masks."""

    def __init__(self, model, batch, prompt, answer, block, device):
        config = model.config
        vocab = model.get_input_embeddings().weight.shape[0]
        mask = getattr(config, "mask_token_id", None)
        self.mask = mask if mask is not None else vocab - 1
        ids = torch.randint(0, vocab - 2, (batch, prompt), device=device)
        self.llada2 = isinstance(config, LLaDA2MoeConfig)
        self.schedule = (
            AbsoluteBlockSchedule(block, steps=block) if self.llada2 else PromptBlockSchedule(block, steps=answer)
        )
        self.canvas = self.schedule.build(ids, torch.ones_like(ids), answer, True, self.mask, vocab - 2, None)
        self.rows = torch.arange(batch, device=device)
        self.width = self.canvas.tokens.shape[1]

    def forward(self, model, columns, cache=None, forward=None, logits_to_keep=0):
        """One forward as `generate()` runs it; `logits_to_keep`: the candidate columns (0: all, as generate.py)."""
        inputs = self.schedule.model_inputs(self.canvas, self.rows, columns)
        tokens = self.canvas.tokens[:, columns.query_start : columns.query_end]
        return (model if forward is None else forward)(
            input_ids=tokens, cache=cache, use_cache=cache is not None, logits_to_keep=logits_to_keep, **inputs
        )


def llada_steps(model, canvas, device, repeats, compile_step):
    """`{step name: (seconds, peak bytes, mean query tokens, key tokens, logit tokens, None)}` for LLaDA 1.x."""
    results = {}
    width, blocks = canvas.width, canvas.canvas.blocks
    full = DiffusionCacheStrategy().forward_columns(blocks[0], 0, width)
    seconds, peak = timed(lambda: canvas.forward(model, full), device, repeats)
    results["full canvas (official)"] = (seconds, peak, width, width, width, None)
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True) if compile_step else None
    if compile_step:
        try:
            seconds, peak = timed(lambda: canvas.forward(model, full, forward=compiled), device, repeats, warmup=3)
            results["full canvas, compiled (CUDA graph)"] = (seconds, peak, width, width, width, None)
        except Exception as error:  # noqa: BLE001  (reported; the cached steps are still measured)
            compile_failed("full canvas, compiled (CUDA graph)", error)
    variants = [
        ("prefix cache step", PrefixCache, None, None),
        ("dual cache step", DualCache, None, None),
        ("static dual cache step", DualCache, width, None),
    ]
    if compiled is not None:
        variants.append(("static dual cache step, compiled (CUDA graph)", DualCache, width, compiled))
    for name, strategy_class, static_width, forward in variants:
        # Averaged over the blocks: a refresh (eager: it allocates a static cache), then the timed cached step.
        times, peaks, query_counts = [], [], []
        try:
            for block in blocks[:: max(1, len(blocks) // 4)]:
                strategy = (
                    strategy_class()
                    if static_width is None
                    else strategy_class(static_width, model.config.num_hidden_layers)
                )
                canvas.forward(model, strategy.forward_columns(block, 0, width), strategy.cache)
                strategy.after_forward(block, 0)
                columns = strategy.forward_columns(block, 1, width)
                queries = columns.query_end - columns.query_start  # generate() projects the queries' logits

                def step():
                    strategy.forward_columns(block, 1, width)  # a static cache's write position goes back to the block
                    canvas.forward(model, columns, strategy.cache, forward=forward, logits_to_keep=queries)
                    strategy.after_forward(block, 1)

                seconds, peak = timed(step, device, repeats, warmup=3 if forward is not None else 2)
                times.append(seconds)
                peaks.append(peak or 0)
                query_counts.append(queries)
        except Exception as error:
            if forward is None:
                raise
            compile_failed(name, error)  # reported; the eager steps are already measured
            continue
        mean_queries = statistics.mean(query_counts)
        results[name] = (statistics.mean(times), max(peaks) or None, mean_queries, width, mean_queries, None)
    return results


def llada2_steps(model, canvas, device, repeats, compile_step):
    """`{step name: (seconds, peak bytes, mean query tokens, key tokens, logit tokens, routed experts per MoE layer)}`
    for LLaDA2.0."""
    results = {}
    blocks = canvas.canvas.blocks
    sample = blocks[:: max(1, len(blocks) // 4)]
    block_len = canvas.schedule.block_length
    times, peaks, keys, experts = [], [], [], []
    for block in sample:
        columns = DiffusionCacheStrategy().forward_columns(block, 0, block.end)  # no cache: [0, block end)
        seconds, peak = timed(lambda: canvas.forward(model, columns, logits_to_keep=block_len), device, repeats)
        times.append(seconds)
        peaks.append(peak or 0)
        keys.append(block.end)
        experts.append(routed_experts(model, lambda: canvas.forward(model, columns, logits_to_keep=block_len)))
    mean_keys = statistics.mean(keys)
    results["uncached step"] = (
        statistics.mean(times), max(peaks) or None, mean_keys, mean_keys, block_len, statistics.mean(experts)
    )  # fmt: skip
    variants = [("block cache step", None, False)]
    variants.append(("static block cache step", canvas.width, False))
    if compile_step:
        variants.append(("static block cache step, compiled", canvas.width, True))
    for name, static_width, use_compile in variants:
        compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True) if use_compile else None
        times, peaks, keys, experts = [], [], [], []
        try:
            for block in sample:
                strategy = BlockCache(static_width, model.config.num_hidden_layers)
                # Fill the cache up to the block start (exact: the committed prefix), then time the block's later step.
                canvas.forward(
                    model, strategy.forward_columns(block, 0, block.start), strategy.cache, logits_to_keep=1
                )
                strategy.cached_length = block.start
                columns = strategy.forward_columns(block, 1, block.end)

                def step(forward=compiled):
                    canvas.forward(model, columns, strategy.cache, forward=forward, logits_to_keep=block_len)
                    strategy.after_forward(block, 1)

                experts.append(routed_experts(model, lambda: step(forward=None)))
                seconds, peak = timed(step, device, repeats, warmup=3 if use_compile else 2)
                times.append(seconds)
                peaks.append(peak or 0)
                keys.append(columns.key_end)
        except Exception as error:
            if not use_compile:
                raise
            compile_failed(name, error)  # reported; the uncompiled steps are already measured
            continue
        results[name] = (
            statistics.mean(times), max(peaks) or None, block_len, statistics.mean(keys), block_len,
            statistics.mean(experts),
        )  # fmt: skip
    return results


def compile_failed(name, error):
    message = f"{name}: {type(error).__name__}: {error}"
    print(f"compiled step failed, {message}", flush=True)
    COMPILE_ERRORS.append(message[:500])


def write_json(path, header, rows):
    """Rewrites `path` with the run's header and every row so far (atomically: a reader never sees half a file)."""
    if path is None:
        return
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({**header, "rows": rows}, indent=1))
    partial.replace(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llada-8b", choices=["llada-8b", "llada2-mini", "tiny", "tiny-llada2"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--answer-lengths", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--prompt-length", type=int, default=128)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--nfe", type=int, default=64, help="NFE budget for the tokens/s column")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time the steps under torch.compile")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    dtype_bytes = torch.finfo(dtype).bits // 8

    peak_flops, peak_bandwidth = machine_peaks(args.device, dtype)
    model = build_model(args.model, args.device, dtype)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    header_info = {
        "model": args.model, "dtype": args.dtype, "device": device_name, "prompt_length": args.prompt_length,
        "block_length": args.block_length, "nfe": args.nfe, "compile": args.compile,
        "attn_implementation": model.config._attn_implementation,
        "peak_tflops": peak_flops / 1e12, "peak_copy_gbps": peak_bandwidth / 1e9, "compile_errors": COMPILE_ERRORS,
    }  # fmt: skip
    rows = []
    write_json(args.json, header_info, rows)
    print(
        f"{args.model}, {args.dtype}, {device_name}: measured peaks {peak_flops / 1e12:.3f} TFLOP/s matmul, "
        f"{peak_bandwidth / 1e9:.0f} GB/s copy; prompt {args.prompt_length}, block {args.block_length}, "
        f"NFE budget {args.nfe}"
    )
    header = (
        f"| {'batch x answer':<14} | {'step':<45} | {'queries':>7} | {'keys':>5} | {'ms/step':>8} | {'peak GiB':>8} "
        f"| {'tok/s @NFE':>10} | {'roofline ms':>11} | {'% of roofline':>13} | {'experts/layer':>13} |"
    )
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    with torch.no_grad():
        for batch in args.batch_sizes:
            for answer in args.answer_lengths:
                canvas = Canvas(model, batch, args.prompt_length, answer, args.block_length, args.device)
                steps = llada2_steps if canvas.llada2 else llada_steps
                results = steps(model, canvas, args.device, args.repeats, args.compile)
                num_blocks = len(canvas.canvas.blocks)
                full_seconds = next(iter(results.values()))[0]
                for name, (seconds, peak, queries, keys, logits, experts) in results.items():
                    flops, moved = step_cost(model, int(queries), int(keys), int(logits), batch, dtype_bytes, experts)
                    roofline = max(flops / peak_flops, moved / peak_bandwidth)
                    # Cached LLaDA 1.x modes refresh the full canvas once per block.
                    refresh = num_blocks if ("prefix" in name or "dual" in name) else 0
                    total = refresh * full_seconds + (args.nfe - refresh) * seconds
                    rate = batch * answer / total if args.nfe > refresh else float("nan")
                    peak_text = f"{peak / 2**30:8.2f}" if peak else f"{'n/a':>8}"
                    print(
                        f"| {f'{batch} x {answer}':<14} | {name:<45} | {queries:>7.0f} | {keys:>5.0f} "
                        f"| {seconds * 1e3:>8.2f} | {peak_text} | {rate:>10.1f} | {roofline * 1e3:>11.2f} "
                        f"| {100 * roofline / seconds:>12.1f}% | {'-' if experts is None else f'{experts:.1f}':>13} |",
                        flush=True,
                    )
                    rows.append({
                        "batch": batch, "answer": answer, "canvas": canvas.width, "step": name,
                        "queries": float(queries), "keys": float(keys), "ms": seconds * 1e3,
                        "peak_gib": peak / 2**30 if peak else None, "tok_s": None if math.isnan(rate) else rate,
                        "roofline_ms": roofline * 1e3, "roofline_pct": 100 * roofline / seconds,
                        "routed_experts_per_layer": experts,
                    })  # fmt: skip
                    write_json(args.json, header_info, rows)


if __name__ == "__main__":
    main()

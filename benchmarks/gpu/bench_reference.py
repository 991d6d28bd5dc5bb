"""In-run reference for the full-canvas step: transformers' own `LlamaForCausalLM` at the LLaDA model's shapes.

Both models are built with random weights at the same shapes (hidden size, layers, heads, MLP width, vocabulary), and
each forward over `batch x tokens` (all logits, as the official sampler's step) is timed two ways:

- eager: the model's forward as it is;
- CUDA graph: the same forward captured once with `torch.cuda.graph` and replayed (no compiler involved), which removes
  the per-kernel launch cost and leaves the kernels' own time. GPU only: on CPU these rows are recorded as skipped.

The LLaDA forward is the sampler's exact full-canvas step (`bench_gpu_steps.Canvas`, the same inputs as there), so
`llada / llama` at equal method is the overhead of our model code over transformers' Llama at the same shapes.

    python benchmarks/gpu/bench_reference.py --device cuda                 # LLaDA-8B shapes, 1 x 384 tokens, bf16
    python benchmarks/gpu/bench_reference.py --model tiny --device cpu --dtype float32   # CPU check
"""

import argparse
import gc
import json
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for bench_gpu_steps

from bench_gpu_steps import Canvas, build_model, instantiate, timed

from llada_hf.generation.caches import DiffusionCacheStrategy


def llama_like(config, vocab: int, device: str, dtype: torch.dtype) -> LlamaForCausalLM:
    """transformers' Llama with a LLaDA config's shapes: same widths, depth, heads, vocabulary and RoPE base."""
    config = LlamaConfig(
        hidden_size=config.d_model, intermediate_size=config.mlp_hidden_size, num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads, num_key_value_heads=config.n_kv_heads,
        vocab_size=vocab, max_position_embeddings=config.max_sequence_length, rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta}, tie_word_embeddings=False,
        attn_implementation=config._attn_implementation,
    )  # fmt: skip
    return instantiate(LlamaForCausalLM, config, device, dtype)


def graphed(forward):
    """`forward` captured in a CUDA graph (after warm-up on a side stream, as torch's docs do); returns the replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            forward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward()
    return graph.replay


def measure(name, forward, args, batch, tokens, rows, write):
    """Appends the eager and the CUDA-graph rows of one model."""
    base = {"model": name, "batch": batch, "tokens": tokens}
    seconds, peak = timed(forward, args.device, args.repeats)
    rows.append({**base, "method": "eager", "ms": seconds * 1e3, "peak_gib": peak / 2**30 if peak else None})
    write()
    if not args.device.startswith("cuda"):
        rows.append({**base, "method": "CUDA graph", "skipped": "CUDA graphs need a CUDA device"})
    else:
        try:
            replay = graphed(forward)
            seconds, peak = timed(replay, args.device, args.repeats)
            rows.append({**base, "method": "CUDA graph", "ms": seconds * 1e3, "peak_gib": peak / 2**30})
        except Exception as error:  # noqa: BLE001  (a capture failure is a finding to report, not a reason to lose the other rows)
            rows.append({**base, "method": "CUDA graph", "error": f"{type(error).__name__}: {error}"[:300]})
    print(json.dumps(rows[-2]), json.dumps(rows[-1]), sep="\n", flush=True)
    write()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llada-8b", choices=["llada-8b", "tiny"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-length", type=int, default=128)
    parser.add_argument("--answer-length", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    rows = []
    header = {"model": args.model, "dtype": args.dtype, "device": args.device, "batch": args.batch}

    def write():
        if args.json:
            partial = Path(args.json + ".partial")
            partial.write_text(json.dumps({**header, "rows": rows}, indent=1))
            partial.replace(args.json)

    with torch.no_grad():
        config, vocab, tokens, width = measure_llada(args, dtype, rows, write, header)
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()  # the LLaDA model is gone: the Llama one is measured alone
        llama = llama_like(config, vocab, args.device, dtype)
        measure("llama", lambda: llama(input_ids=tokens, use_cache=False), args, args.batch, width, rows, write)


def measure_llada(args, dtype, rows, write, header):
    """Measures the LLaDA full-canvas step; returns its config, vocabulary size, input ids and width for Llama."""
    llada = build_model(args.model, args.device, dtype)
    config, vocab = llada.config, llada.get_input_embeddings().weight.shape[0]
    header["attn_implementation"] = config._attn_implementation
    canvas = Canvas(llada, args.batch, args.prompt_length, args.answer_length, args.block_length, args.device)
    columns = DiffusionCacheStrategy().forward_columns(canvas.canvas.blocks[0], 0, canvas.width)
    inputs = canvas.schedule.model_inputs(canvas.canvas, canvas.rows, columns)  # built once, outside any graph
    tokens = canvas.canvas.tokens[:, columns.query_start : columns.query_end]
    measure("llada", lambda: llada(input_ids=tokens, use_cache=False, **inputs), args, args.batch, canvas.width, rows,
            write)  # fmt: skip
    return config, vocab, tokens.clone(), canvas.width


if __name__ == "__main__":
    main()

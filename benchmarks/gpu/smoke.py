"""Smoke part of the GPU kit: the environment in one record, then one tiny forward of each family on the device.

It is the kit's first part because the kit's first GPU run is also this project's first run under that machine's torch:
if importing or one tiny forward fails there, this part says so in seconds, with the versions next to it.

    python benchmarks/gpu/smoke.py --device cuda --json smoke.json
"""

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for bench_gpu_steps


def version(distribution: str) -> str | None:
    """The installed version, read from the metadata (importing bitsandbytes alone takes seconds)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: str) -> dict:
    cuda = device.startswith("cuda")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if cuda else "CPU",
        "capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "cpu_count": os.cpu_count(),
        **{name: version(name) for name in ("transformers", "huggingface_hub", "tokenizers", "safetensors",
                                            "accelerate", "peft", "bitsandbytes", "flash_attn")},
    }  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")

    record = {"environment": environment(args.device), "rows": []}
    print(json.dumps(record["environment"]), flush=True)

    def write_json():
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=1))

    write_json()  # the versions are on record even if importing llada_hf fails
    from bench_gpu_steps import build_model, synchronize  # imports llada_hf

    dtype = getattr(torch, args.dtype)
    for name in ("tiny", "tiny-llada2"):
        start = time.perf_counter()
        model = build_model(name, args.device, dtype)
        ids = torch.randint(0, model.config.vocab_size - 8, (2, 32), device=args.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        synchronize(args.device)
        finite = bool(torch.isfinite(logits).all())
        row = {"model": name, "device": args.device, "dtype": args.dtype, "logits_shape": list(logits.shape),
               "finite": finite, "seconds": time.perf_counter() - start}  # fmt: skip
        record["rows"].append(row)
        print(json.dumps(row), flush=True)
        write_json()
        if not finite:
            raise SystemExit(f"{name}: non-finite logits on {args.device}")


if __name__ == "__main__":
    main()

"""bf16 against bitsandbytes 8-bit and 4-bit (nf4, double quant): memory, generation speed and a QLoRA step.

Random-weight checkpoints of the released shapes (LLaDA-8B, LLaDA2.0-mini) are written once to a scratch folder;
each (family, mode) then runs in a fresh process, which loads with `from_pretrained(quantization_config=...)`,
generates, and runs a few QLoRA steps. One table compares the modes side by side from the same run.

    python benchmarks/bench_quantization.py --device cuda                      # full shapes (GPU, ~50 GB disk)
    python benchmarks/bench_quantization.py --device cuda --layers 4           # quicker
    python benchmarks/bench_quantization.py --device cpu --layers 2 --hidden 256 --gen-length 16   # CPU check

Columns: weights = `get_memory_footprint()`; peak = peak CUDA memory allocated during load + generate (CPU: not
measured); tok/s = generated tokens per second (1 token per step, as the official samplers at steps = gen length);
qlora s/step = one LoRA step on a 4 x 256 batch. On CPU the unquantized mode ("bf16") loads in float32. Modes bitsandbytes cannot run on the device are reported as skipped
with the reason.
`--json PATH` also writes the rows to PATH (rewritten after each mode); `--skip-modes` records modes as skipped
without running them (the GPU kit's CPU dry run does so for the bitsandbytes modes); `--init-device cuda` builds the
random checkpoint on the GPU, which is much faster at the released shapes.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM


FIXTURES = Path(__file__).parents[1] / "modeling_tests" / "fixtures"
MODES = ("bf16", "int8", "nf4")

WORKER = r"""
import json, sys, time
import torch, llada_hf
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

path, mode, device, gen_length, block_length, qlora_steps = sys.argv[1:7]
gen_length, block_length, qlora_steps = int(gen_length), int(block_length), int(qlora_steps)
dtype = torch.bfloat16 if device == "cuda" else torch.float32
quantization = {
    "bf16": None,
    "int8": BitsAndBytesConfig(load_in_8bit=True),
    "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype),
}[mode]
cuda = device == "cuda"
def sync():
    if cuda:
        torch.cuda.synchronize()
start = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=quantization, device_map=device)
sync()
result = {"load_s": time.perf_counter() - start, "weights_gib": model.get_memory_footprint() / 2**30}
prompt = torch.randint(0, 1000, (1, 64), device=model.device)
steps = gen_length if model.diffusion_family == "llada" else block_length  # LLaDA: total; LLaDA2: per block
kwargs = dict(max_new_tokens=gen_length, block_length=block_length, steps=steps, temperature=0.0)
if model.diffusion_family == "llada2":
    kwargs["threshold"] = 2.0  # quota only: one token per step, as for LLaDA
model.generate(prompt, max_new_tokens=block_length, block_length=block_length, steps=block_length, temperature=0.0,
               **({"threshold": 2.0} if model.diffusion_family == "llada2" else {}))  # warm-up
sync()
start = time.perf_counter()
model.generate(prompt, **kwargs)
sync()
result["tok_s"] = gen_length / (time.perf_counter() - start)
if cuda:
    result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
if qlora_steps and mode != "bf16":
    import peft
    from llada_hf.training import DataCollatorForDiffusionPretraining, masked_diffusion_loss
    model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "dense"]
    model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    mask_id = model.config.mask_token_id
    collator = DataCollatorForDiffusionPretraining(mask_token_id=mask_id, seed=0)
    model.train()
    times = []
    for step in range(qlora_steps):
        batch = collator([{"input_ids": torch.randint(0, mask_id, (256,))} for _ in range(4)])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        sync()
        start = time.perf_counter()
        logits = model(input_ids=batch["input_ids"]).logits
        loss = masked_diffusion_loss(logits, batch["labels"], batch["p_mask"], batch["loss_normalizer"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        sync()
        times.append(time.perf_counter() - start)
    result["qlora_s_per_step"] = min(times)
    result["qlora_loss"] = loss.item()
    if cuda:
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
print("RESULT " + json.dumps(result))
"""


def write_checkpoint(family: str, folder: Path, layers: int | None, hidden: int | None, device: str = "cpu") -> Path:
    """A random bf16 checkpoint of the released shape (optionally fewer layers / a smaller hidden size)."""
    if family == "llada":
        config = LLaDAConfig(**json.loads((FIXTURES / "llada-8b-instruct.config.json").read_text()))
        if layers:
            config.n_layers = layers
        if hidden:
            config.d_model, config.mlp_hidden_size = hidden, 3 * hidden
        model_class = LLaDAModelLM
    else:
        config = LLaDA2MoeConfig(**json.loads((FIXTURES / "llada2-mini.config.json").read_text()))
        if layers:
            config.num_hidden_layers = layers
        if hidden:
            config.hidden_size, config.intermediate_size, config.moe_intermediate_size = (
                hidden,
                2 * hidden,
                hidden // 2,
            )
        model_class = LLaDA2MoeModelLM
    path = folder / family
    torch.manual_seed(0)
    with torch.device(device):
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = model_class(config)
        finally:
            torch.set_default_dtype(torch.float32)
    model.save_pretrained(path)
    del model
    return path


def run_mode(path: Path, mode: str, args) -> dict:
    command = [sys.executable, "-c", WORKER, str(path), mode, args.device, str(args.gen_length),
               str(args.block_length), str(args.qlora_steps)]  # fmt: skip
    process = subprocess.run(command, capture_output=True, text=True)
    for line in process.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    error = (process.stderr.strip().splitlines() or ["no output"])[-1]
    return {"skipped": error[:100]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--families", nargs="+", default=["llada", "llada2"], choices=["llada", "llada2"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--layers", type=int, default=None, help="Fewer decoder layers than the released models.")
    parser.add_argument("--hidden", type=int, default=None, help="A smaller hidden size (CPU checks).")
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--qlora-steps", type=int, default=3, help="0 skips the QLoRA step.")
    parser.add_argument("--scratch", default=None, help="Folder for the random checkpoints (default: a temp dir).")
    parser.add_argument("--init-device", default="cpu", help="Device the random checkpoint is built on.")
    parser.add_argument("--skip-modes", nargs="+", default=[], choices=MODES, help="Record these modes as skipped.")
    parser.add_argument("--skip-reason", default="not run (--skip-modes)", help="The reason recorded for them.")
    parser.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device; use --device cpu for a CPU check")

    rows = []

    def write_json():
        if args.json:
            partial = Path(args.json + ".partial")
            header = {"device": args.device, "layers": args.layers, "hidden": args.hidden,
                      "gen_length": args.gen_length, "block_length": args.block_length}  # fmt: skip
            records = [{"family": family, "mode": mode, **result} for family, mode, result in rows]
            partial.write_text(json.dumps({**header, "rows": records}, indent=1))
            partial.replace(args.json)

    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        for family in args.families:
            to_run = [mode for mode in args.modes if mode not in args.skip_modes]
            path = (
                write_checkpoint(family, Path(scratch), args.layers, args.hidden, args.init_device) if to_run else None
            )
            for mode in args.modes:
                result = {"skipped": args.skip_reason} if mode in args.skip_modes else run_mode(path, mode, args)
                rows.append((family, mode, result))
                print(f"{family} {mode}: {rows[-1][2]}", file=sys.stderr, flush=True)
                write_json()

    def cell(result, key, fmt):
        return format(result[key], fmt) if key in result else "-"

    print(f"\ndevice={args.device} layers={args.layers or 'released'} gen_length={args.gen_length}\n")
    print("| family | mode | weights GiB | peak GiB | load s | tok/s | qlora s/step |")
    print("|---|---|---|---|---|---|---|")
    for family, mode, result in rows:
        if "skipped" in result:
            print(f"| {family} | {mode} | skipped: {result['skipped']} | | | | |")
            continue
        print(
            f"| {family} | {mode} | {cell(result, 'weights_gib', '.2f')} | {cell(result, 'peak_gib', '.2f')} | "
            f"{cell(result, 'load_s', '.1f')} | {cell(result, 'tok_s', '.1f')} | "
            f"{cell(result, 'qlora_s_per_step', '.2f')} |"
        )


if __name__ == "__main__":
    main()

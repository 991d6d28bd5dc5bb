"""Peak memory of loading a ~1B-parameter LLaDA checkpoint: `from_pretrained` against a naive load, in one run.

The naive baseline is what loaders without meta-device init do: build the model with random weights, then read the
safetensors file into memory and copy it in. `from_pretrained` builds on the meta device and maps the file, so its
anonymous (non-file-backed) memory should stay far below the size of the weights. Each method runs in a fresh
process; memory is sampled from /proc/self/status every 2 ms. The last column is resident memory after one forward
pass, when the mapped weight pages have been read in (page cache, shareable, not anonymous memory).

    python benchmarks/bench_load_memory.py            # ~1.1B parameters, bf16 (needs ~10 GB RAM and ~2.3 GB disk)
    python benchmarks/bench_load_memory.py --layers 4 # quicker, smaller
"""

import argparse
import json
import subprocess
import sys
import tempfile

import torch

from llada_hf import LLaDAConfig, LLaDAModelLM


MEASURE = r"""
import json, sys, threading, time
import torch, llada_hf
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

def status(field):
    with open("/proc/self/status") as f:
        return int(dict(line.split(":", 1) for line in f)[field].split()[0]) * 1024

method, path = sys.argv[1], sys.argv[2]
baseline = {"RssAnon": status("RssAnon"), "VmRSS": status("VmRSS")}
peak = dict(baseline)
running = True
def sample():
    while running:
        for field in peak:
            peak[field] = max(peak[field], status(field))
        time.sleep(0.002)
thread = threading.Thread(target=sample)
thread.start()
start = time.perf_counter()
if method == "from_pretrained":
    model = AutoModel.from_pretrained(path, dtype=torch.bfloat16)
else:
    torch.set_default_dtype(torch.bfloat16)
    model = AutoModel.from_config(AutoConfig.from_pretrained(path))
    model.load_state_dict(load_file(f"{path}/model.safetensors"), strict=False)
seconds = time.perf_counter() - start
running = False
thread.join()
weights = sum(p.numel() * p.element_size() for p in model.parameters())
with torch.no_grad():  # touches every weight page: mapped weights become resident here
    model(torch.zeros(1, 8, dtype=torch.long))
print(json.dumps({"weights": weights, "seconds": seconds, "anon": peak["RssAnon"] - baseline["RssAnon"],
                  "rss": peak["VmRSS"] - baseline["VmRSS"], "rss_after_forward": status("VmRSS") - baseline["VmRSS"]}))
"""


def write_checkpoint(path: str, layers: int) -> None:
    config = LLaDAConfig(
        d_model=2048, n_heads=16, n_kv_heads=16, n_layers=layers, mlp_hidden_size=5632,
        vocab_size=32000, embedding_size=32000, weight_tying=False,
        mask_token_id=31999, eos_token_id=31998, pad_token_id=31998,
    )  # fmt: skip
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    model.save_pretrained(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=22, help="22 layers of d_model 2048 is ~1.1B parameters")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as path:
        write_checkpoint(path, args.layers)
        rows = {}
        for method in ("naive load_state_dict", "from_pretrained"):
            run = subprocess.run(
                [sys.executable, "-c", MEASURE, method.split()[-1], path], capture_output=True, text=True, check=True
            )
            rows[method] = json.loads(run.stdout.strip().splitlines()[-1])
    weights = rows["from_pretrained"]["weights"]
    print(f"checkpoint: {weights / 2 / 1e9:.2f}B parameters, {weights / 2**30:.2f} GiB of bf16 weights")
    header = (
        f"{'method':24} {'anon peak GiB':>14} {'x weights':>10} {'RSS peak GiB':>13} {'x weights':>10} {'s':>7}"
        f" {'RSS after 1st forward':>22}"
    )
    print(header + "\n" + "-" * len(header))
    for method, row in rows.items():
        print(
            f"{method:24} {row['anon'] / 2**30:14.2f} {row['anon'] / weights:10.2f} "
            f"{row['rss'] / 2**30:13.2f} {row['rss'] / weights:10.2f} {row['seconds']:7.1f}"
            f" {row['rss_after_forward'] / weights:21.2f}x"
        )


if __name__ == "__main__":
    main()

"""What installing llada_hf costs a process that imports transformers: wall time of fresh interpreters, median of N.

llada_hf installs no startup hook (no `.pth` file): a process that does not import it runs none of its code, so
`import transformers` takes the same time whether or not llada_hf is installed, and the script checks that neither
torch nor llada_hf end up in `sys.modules`. The rows after it show what `import llada_hf` adds (it imports torch and
the model code of both families), next to what loading any model pays anyway (torch, transformers' modeling code).

    python benchmarks/bench_import.py             # 10 runs per row
    python benchmarks/bench_import.py --runs 20
"""

import argparse
import statistics
import subprocess
import sys
import time


# `pass` is the interpreter's start-up; importing a model class (what loading any model does) imports torch and
# transformers' modeling code.
ROWS = (
    "pass",
    "import transformers",
    "import torch",
    "from transformers import LlamaForCausalLM",
    "import transformers, llada_hf",
)

REPORT = "; import sys; print('torch' in sys.modules, 'llada_hf' in sys.modules)"


def time_code(code: str, runs: int) -> tuple[list[float], list[str]]:
    """Wall times of `runs` fresh interpreters running `code`, and whether each had torch / llada_hf imported."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", code + REPORT], check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
    return times, result.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    print(f"{args.runs} fresh interpreters per row, {sys.executable}\n")
    print("| code | median s | min s | max s | torch imported | llada_hf imported |")
    print("|---|---|---|---|---|---|")
    for code in ROWS:
        times, (torch_imported, llada_hf_imported) = time_code(code, args.runs)
        print(
            f"| `{code}` | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | "
            f"{torch_imported == 'True'} | {llada_hf_imported == 'True'} |"
        )


if __name__ == "__main__":
    main()

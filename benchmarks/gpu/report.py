"""Assembles the GPU kit's output files from what its parts left in the work folder (no torch: it runs in a blink).

`run_all.sh` calls it after every part, so the files under the output folder are always complete for the parts
finished so far, even if the whole command is stopped part-way. Inputs, in the work folder:

- `plan.tsv`: one line per part: name, time limit (s), expected GPU wall time (s), what it measures;
- `parts.tsv`: one line per finished part: name, status, exit code, seconds, limit, reason, command;
- `<part>.json`: the part's own record (`rows` and a header), `<part>.log`: its output,
  `test_gpu.xml`: pytest's JUnit report.

Outputs, in the output folder: OUTPUT_FILES (results.json, results.md, run.log).

    python benchmarks/gpu/report.py --work WORK --out OUT --mode gpu
"""

import argparse
import datetime
import json
import math
import os
from pathlib import Path
from xml.etree import ElementTree

OUTPUT_FILES = ("results.json", "results.md", "run.log")
STATUSES = ("ok", "failed", "timeout", "skipped", "not run")
LOG_TAIL_BYTES = 1 << 20  # per part, in run.log


# ---------------------------------------------------------------------------------------------------------------------
# Reading the parts
# ---------------------------------------------------------------------------------------------------------------------


def read_tsv(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


def junit_rows(path: Path) -> list[dict]:
    """One row per test case of a pytest JUnit report: outcome, and the reason of a skip or failure."""
    rows = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        row = {"test": f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}", "outcome": "passed",
               "seconds": float(case.get("time", 0))}  # fmt: skip
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                row["outcome"] = {"failure": "failed"}.get(tag, tag)
                message = (element.get("message") or element.text or "").strip().splitlines()
                row["skipped" if tag == "skipped" else "error"] = (message[0] if message else tag)[:300]
        rows.append(row)
    return rows


def part_record(work: Path, name: str, planned: list[str], finished: list[str] | None) -> dict:
    _, limit, expected, description = planned
    record = {"name": name, "description": description, "limit_s": float(limit), "expected_gpu_s": float(expected)}
    if finished is None:
        return {**record, "status": "not run", "reason": "the run stopped before this part finished"}
    _, status, rc, seconds, limit, reason, command = finished
    record.update(status=status, rc=int(rc) if rc else None, seconds=float(seconds), limit_s=float(limit),
                  reason=reason or None, command=command)  # fmt: skip
    data_path = work / f"{name}.json"
    if data_path.exists():
        data = json.loads(data_path.read_text())
        record["header"] = {key: value for key, value in data.items() if key != "rows"}
        record["rows"] = data.get("rows", [])
    junit = work / f"{name}.xml"
    if junit.exists():
        record["rows"] = junit_rows(junit)
    rows = record.get("rows") or []
    # A part that ran but whose every row is skipped (a GPU-only part on CPU: all tests skipped, say) is skipped.
    if status == "ok" and rows and all("skipped" in row for row in rows):
        record["status"] = "skipped"
        record["reason"] = record["reason"] or rows[0]["skipped"]
    errors = [row for row in rows if "error" in row]
    if errors:
        record["row_errors"] = len(errors)
    if record["status"] in ("failed", "timeout"):
        log = work / f"{name}.log"
        if log.exists():
            record["log_tail"] = log.read_text(errors="replace").splitlines()[-25:]
    return record


# ---------------------------------------------------------------------------------------------------------------------
# Targets (issue 15): each is read from the parts' rows; None where a figure is missing
# ---------------------------------------------------------------------------------------------------------------------


def rows_of(parts: dict, name: str) -> list[dict]:
    return [row for row in parts.get(name, {}).get("rows") or [] if "ms" in row]


def largest_case(rows: list[dict]) -> list[dict]:
    """The rows of the largest batch, then the longest answer (the case a target is read at)."""
    if not rows:
        return []
    batch = max(row["batch"] for row in rows)
    answer = max(row["answer"] for row in rows if row["batch"] == batch)
    return [row for row in rows if row["batch"] == batch and row["answer"] == answer]


def target(name, value, bound, direction, detail, missing=None):
    met = None if value is None else (value <= bound if direction == "<=" else value >= bound)
    return {"target": name, "value": value, "bound": f"{direction} {bound}", "met": met, "detail": detail,
            "missing": missing if value is None else None}  # fmt: skip


def targets(parts: dict) -> list[dict]:
    results = []

    # 1. LLaDA-8B full-canvas step at 1 x 384 against transformers' Llama at the same shapes under a CUDA graph.
    reference = rows_of(parts, "reference")
    llama = [row["ms"] for row in reference if row["model"] == "llama" and row["method"] == "CUDA graph"]
    candidates = {f"llada {row['method']}": row["ms"] for row in reference if row["model"] == "llada"}
    detail = {key: round(ms, 3) for key, ms in candidates.items()}
    if llama:
        detail["llama CUDA graph"] = round(llama[0], 3)
    value = min(candidates.values()) / llama[0] if llama and candidates else None
    results.append(
        target(
            "LLaDA full-canvas step / Llama step under a CUDA graph (batch 1, canvas 384)",
            value,
            1.1,
            "<=",
            detail,
            "no Llama CUDA-graph row" if not llama else "no LLaDA row",
        )
    )

    # 2. Batch 8, answer 512: the dual-cache step against the full-canvas step, both run the same way: captured (CUDA
    # graphs; the static dual cache) when the run has both, else eager.
    case = {row["step"]: row["ms"] for row in largest_case(rows_of(parts, "llada8b"))}
    eager = (case.get("full canvas (official)"), case.get("dual cache step"))
    captured = (
        case.get("full canvas, compiled (CUDA graph)"),
        case.get("static dual cache step, compiled (CUDA graph)"),
    )
    full, dual = captured if all(captured) else eager
    prefix = case.get("prefix cache step")
    detail = {
        "full ms": full,
        "dual ms": dual,
        "captured": all(captured),
        "eager full / dual": eager[0] / eager[1] if all(eager) else None,
        "official eager / captured static dual": eager[0] / captured[1] if eager[0] and captured[1] else None,
        "prefix speed-up (eager)": eager[0] / prefix if eager[0] and prefix else None,
    }
    value = full / dual if full and dual else None
    results.append(
        target(
            "full-canvas step / dual-cache step (batch 8, answer 512)",
            value,
            5,
            ">=",
            detail,
            "no full-canvas or dual-cache row",
        )
    )

    # 3. LLaDA2.0-mini: the cached 32-token block step against the memory roofline the script measures.
    rows = [row for row in rows_of(parts, "llada2mini") if "block cache" in row["step"] and row["batch"] == 1]
    ratios = {row["step"]: row["ms"] / row["roofline_ms"] for row in rows if row.get("roofline_ms")}
    value = min(ratios.values()) if ratios else None
    results.append(
        target(
            "LLaDA2.0-mini cached block step / roofline (batch 1)",
            value,
            2,
            "<=",
            {step: round(ratio, 2) for step, ratio in ratios.items()},
            "no block-cache row",
        )
    )

    # 4. sdpa bf16 agrees with eager on both families; batched bf16 generate = single rows (test_gpu.py).
    tests = parts.get("test_gpu", {}).get("rows") or []
    counted = [row for row in tests if row["outcome"] != "skipped"]
    passed = sum(row["outcome"] == "passed" for row in counted)
    value = passed / len(counted) if counted else None
    results.append(
        target(
            "test_gpu.py: sdpa == eager (bf16 tolerance), batched generate == single rows",
            value,
            1.0,
            ">=",
            {row["test"]: row["outcome"] for row in tests},
            "no test ran",
        )
    )
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict]) -> list[str]:
    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key in columns) + " |" for row in rows]
    return lines


def markdown(results: dict) -> str:
    machine = results.get("machine") or {}
    lines = [
        f"# GPU kit results ({results['mode']})",
        "",
        (
            f"Started {results['started']}, {results['total_s']:.0f} s of a {results['budget_s']:.0f} s budget. "
            f"Machine: {machine.get('device', 'unknown')}, torch {machine.get('torch')} "
            f"(CUDA {machine.get('torch_cuda')}), transformers {machine.get('transformers')}, "
            f"bitsandbytes {machine.get('bitsandbytes')}, Python {machine.get('python')}."
        ),
        "",
    ]
    if results["mode"] == "dry-run":
        lines += ["Dry run: tiny shapes on CPU; the figures only show that every part runs, not how fast.", ""]
    lines += ["## Parts", ""]
    lines += markdown_table([
        {"part": part["name"], "status": part["status"], "seconds": part.get("seconds"), "limit s": part["limit_s"],
         "expected on the GPU s": part["expected_gpu_s"], "what": part["description"], "note": part.get("reason")}
        for part in results["parts"]
    ])  # fmt: skip
    lines += ["", "## Targets", ""]
    lines += markdown_table([
        {"target": item["target"], "value": item["value"], "bound": item["bound"],
         "met": {True: "yes", False: "no", None: "-"}[item["met"]], "detail": item["missing"] or item["detail"]}
        for item in results["targets"]
    ])  # fmt: skip
    for part in results["parts"]:
        lines += ["", f"## {part['name']}: {part['description']}", "", f"Status: {part['status']}"]
        if part.get("reason"):
            lines[-1] += f" ({part['reason']})"
        if part.get("command"):
            lines += ["", f"`{part['command']}`"]
        if part.get("header"):
            lines += ["", ", ".join(f"{key} {cell(value)}" for key, value in part["header"].items())]
        if part.get("rows"):
            lines += [""] + markdown_table(part["rows"])
        if part.get("log_tail"):
            lines += ["", "```", *part["log_tail"], "```"]
    return "\n".join(lines) + "\n"


def run_log(work: Path, parts: list[dict]) -> str:
    chunks = []
    for part in parts:
        took = "" if part.get("seconds") is None else " in {:.1f} s".format(part["seconds"])
        chunks.append(f"===== {part['name']}: {part['status']}{took} =====\n")
        if part.get("command"):
            chunks.append(f"+ {part['command']}\n")
        log = work / f"{part['name']}.log"
        if log.exists():
            data = log.read_bytes()[-LOG_TAIL_BYTES:]
            chunks.append(data.decode(errors="replace"))
    return "".join(chunks)


def write_atomically(path: Path, text: str):
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    partial.replace(path)


def build(work: Path, mode: str, started: str, budget: float) -> dict:
    finished = {line[0]: line for line in read_tsv(work / "parts.tsv")}
    parts = [part_record(work, plan[0], plan, finished.get(plan[0])) for plan in read_tsv(work / "plan.tsv")]
    by_name = {part["name"]: part for part in parts}
    smoke = by_name.get("smoke", {}).get("header", {})
    start = datetime.datetime.fromisoformat(started)
    return {
        "kit": "llada_hf GPU verification kit (benchmarks/gpu/run_all.sh)",
        "mode": mode,
        "started": started,
        "total_s": (datetime.datetime.now(datetime.UTC) - start).total_seconds(),
        "budget_s": budget,
        "machine": smoke.get("environment"),
        "parts": parts,
        "targets": targets(by_name),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--mode", required=True, choices=["gpu", "dry-run"])
    parser.add_argument("--started", required=True, help="ISO time the run started (UTC)")
    parser.add_argument("--budget", required=True, type=float)
    args = parser.parse_args()
    results = build(args.work, args.mode, args.started, args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "results.json", json.dumps(results, indent=1, default=str) + "\n")
    write_atomically(args.out / "results.md", markdown(results))
    write_atomically(args.out / "run.log", run_log(args.work, results["parts"]))


if __name__ == "__main__":
    main()

"""The GPU verification kit (`benchmarks/gpu/run_all.sh`) cannot rot: its CPU dry run runs here, through the same
parts, scripts and report as the GPU run, and must leave the same output files with every part accounted for.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "benchmarks" / "gpu"
PARTS = ["install", "smoke", "test_gpu", "reference", "llada8b", "llada2mini", "bnb"]

spec = importlib.util.spec_from_file_location("gpu_kit_report", KIT / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def run_kit(out: Path, *arguments: str, timeout: float = 600) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable}
    environment.pop("OUT", None)
    return subprocess.run(
        ["bash", str(KIT / "run_all.sh"), "--dry-run", "--out", str(out), *arguments],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def load(out: Path) -> tuple[dict, dict]:
    results = json.loads((out / "results.json").read_text())
    return results, {part["name"]: part for part in results["parts"]}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-kit")
    process = run_kit(out)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return out


@pytest.mark.slow
def test_dry_run_leaves_the_gpu_runs_files_with_every_part_accounted_for(dry_run):
    assert sorted(path.name for path in dry_run.iterdir()) == sorted(report.OUTPUT_FILES)
    results, parts = load(dry_run)
    assert results["mode"] == "dry-run"
    assert [part["name"] for part in results["parts"]] == PARTS
    for name, part in parts.items():
        assert part["status"] in ("ok", "skipped"), (name, part)
    # Nothing is installed, and the captured (CUDA-graph) steps are GPU-only.
    assert parts["install"]["status"] == "skipped"
    assert not any("compiled" in row["step"] for row in parts["llada8b"]["rows"] + parts["llada2mini"]["rows"])
    # test_gpu.py ran and every test was skipped without CUDA, so the part is recorded as skipped.
    assert parts["test_gpu"]["status"] == "skipped"
    assert parts["test_gpu"]["rows"] and all(row["outcome"] == "skipped" for row in parts["test_gpu"]["rows"])
    markdown = (dry_run / "results.md").read_text()
    log = (dry_run / "run.log").read_text()
    for name in PARTS:
        assert f"## {name}: " in markdown
        assert f"===== {name}: {parts[name]['status']}" in log


@pytest.mark.slow
def test_dry_run_parts_measure_what_the_gpu_run_measures(dry_run):
    results, parts = load(dry_run)
    assert results["machine"]["torch"] and results["machine"]["transformers"]
    assert [row["model"] for row in parts["smoke"]["rows"]] == ["tiny", "tiny-llada2"]
    assert all(row["finite"] for row in parts["smoke"]["rows"])

    reference = {(row["model"], row["method"]): row for row in parts["reference"]["rows"]}
    assert set(reference) == {(model, method) for model in ("llada", "llama") for method in ("eager", "CUDA graph")}
    assert reference["llada", "eager"]["ms"] > 0 and reference["llama", "eager"]["ms"] > 0
    assert "CUDA" in reference["llada", "CUDA graph"]["skipped"]

    steps = {row["step"] for row in parts["llada8b"]["rows"]}
    assert steps == {"full canvas (official)", "prefix cache step", "dual cache step", "static dual cache step"}
    assert all(row["ms"] > 0 and row["roofline_ms"] > 0 for row in parts["llada8b"]["rows"])
    assert {row["step"] for row in parts["llada2mini"]["rows"]} >= {"uncached step", "block cache step"}

    bnb = {row["mode"]: row for row in parts["bnb"]["rows"]}
    assert bnb["bf16"]["tok_s"] > 0 and "skipped" not in bnb["bf16"]
    assert "GPU-only" in bnb["int8"]["skipped"] and "GPU-only" in bnb["nf4"]["skipped"]

    # The targets are read from the parts' rows: the cache ratio exists at tiny shapes; the Llama CUDA graph does not.
    targets = {item["target"].split(" (")[0]: item for item in results["targets"]}
    cache = targets["full-canvas step / dual-cache step"]
    assert cache["value"] == pytest.approx(cache["detail"]["full ms"] / cache["detail"]["dual ms"])
    assert targets["LLaDA full-canvas step / Llama step under a CUDA graph"]["value"] is None


def test_budget_and_part_limits_stop_parts_without_losing_the_run(tmp_path):
    """A part past its limit is recorded as a timeout and the run goes on; parts past the budget are skipped."""
    process = run_kit(tmp_path / "limit", "--only", "smoke,llada8b", "--part-limit", "1", timeout=120)
    assert process.returncode == 0, process.stderr[-3000:]
    _, parts = load(tmp_path / "limit")
    assert parts["smoke"]["status"] == "timeout" and parts["llada8b"]["status"] == "timeout"
    assert parts["reference"]["status"] == "skipped" and "--only" in parts["reference"]["reason"]

    process = run_kit(tmp_path / "budget", "--budget", "1", timeout=120)
    assert process.returncode == 0, process.stderr[-3000:]
    _, parts = load(tmp_path / "budget")
    assert parts["smoke"]["status"] == "skipped" and "budget" in parts["smoke"]["reason"]
    assert all(part["status"] == "skipped" for part in parts.values())


def write_work_folder(work: Path):
    """A GPU run's work folder as the parts leave it, with figures chosen to hit and miss the targets."""
    plan = [(name, 100, 10, f"what {name} measures") for name in PARTS]
    (work / "plan.tsv").write_text("".join("\t".join(map(str, line)) + "\n" for line in plan))
    finished = [
        ("smoke", "ok", 0),
        ("test_gpu", "ok", 0),
        ("reference", "ok", 0),
        ("llada8b", "ok", 0),
        ("llada2mini", "timeout", 124),
    ]  # fmt: skip  (install and bnb never finished)
    (work / "parts.tsv").write_text(
        "".join(f"{name}\t{status}\t{rc}\t12.5\t100\t\tcmd {name}\n" for name, status, rc in finished)
    )
    (work / "llada2mini.log").write_text("compiling\n" * 30 + "killed\n")
    (work / "smoke.json").write_text(json.dumps({"environment": {"device": "NVIDIA H200", "torch": "2.11.0"},
                                                 "rows": [{"model": "tiny", "finite": True}]}))  # fmt: skip
    llada = {"model": "llada", "batch": 1, "tokens": 384}
    llama = {"model": "llama", "batch": 1, "tokens": 384}
    (work / "reference.json").write_text(json.dumps({"rows": [
        {**llada, "method": "eager", "ms": 30.0}, {**llada, "method": "CUDA graph", "ms": 16.0},
        {**llama, "method": "eager", "ms": 20.0}, {**llama, "method": "CUDA graph", "ms": 15.0},
    ]}))  # fmt: skip
    step = {"batch": 8, "answer": 512, "roofline_ms": 50.0}
    (work / "llada8b.json").write_text(json.dumps({"rows": [
        {**step, "step": "full canvas (official)", "ms": 100.0}, {**step, "step": "prefix cache step", "ms": 50.0},
        {**step, "step": "dual cache step", "ms": 25.0},
        {**step, "step": "full canvas, compiled (CUDA graph)", "ms": 60.0},
        {**step, "step": "static dual cache step, compiled (CUDA graph)", "ms": 10.0},
    ]}))  # fmt: skip
    block = {"batch": 1, "answer": 256}
    (work / "llada2mini.json").write_text(json.dumps({"rows": [
        {**block, "step": "uncached step", "ms": 40.0, "roofline_ms": 10.0},
        {**block, "step": "block cache step", "ms": 12.0, "roofline_ms": 6.0},
        {**block, "step": "static block cache step", "ms": 9.0, "roofline_ms": 6.0},
        {**block, "batch": 8, "step": "block cache step", "ms": 1.0, "roofline_ms": 6.0},  # another batch: ignored
    ]}))  # fmt: skip
    (work / "test_gpu.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="modeling_tests.test_gpu" name="test_a[sdpa]" time="1.0"/>'
        '<testcase classname="modeling_tests.test_gpu" name="test_b" time="2.0"><failure message="rows differ"/>'
        "</testcase>"
        '<testcase classname="modeling_tests.test_gpu" name="test_c" time="0.0"><skipped message="no flash-attn"/>'
        "</testcase></testsuite></testsuites>"
    )


def test_report_reads_the_targets_and_statuses_of_a_gpu_run(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    write_work_folder(work)
    subprocess.run(
        [sys.executable, str(KIT / "report.py"), "--work", str(work), "--out", str(out), "--mode", "gpu",
         "--started", "2026-11-29T10:00:00+00:00", "--budget", "510"],
        check=True,
    )  # fmt: skip
    assert sorted(path.name for path in out.iterdir()) == sorted(report.OUTPUT_FILES)
    results, parts = load(out)
    assert results["machine"]["device"] == "NVIDIA H200"
    assert parts["install"]["status"] == "not run" and parts["bnb"]["status"] == "not run"
    assert parts["llada2mini"]["status"] == "timeout"
    assert parts["llada2mini"]["log_tail"][-1] == "killed"
    assert [row["outcome"] for row in parts["test_gpu"]["rows"]] == ["passed", "failed", "skipped"]
    assert parts["test_gpu"]["status"] == "ok"

    targets = [(item["value"], item["met"]) for item in results["targets"]]
    assert targets[0] == (pytest.approx(16.0 / 15.0), True)  # best LLaDA step (CUDA graph) / Llama CUDA graph
    assert targets[1] == (pytest.approx(6.0), True)  # captured: full 60 ms / static dual 10 ms, against >= 5
    assert results["targets"][1]["detail"]["eager full / dual"] == pytest.approx(4.0)  # 100 / 25
    assert targets[2] == (pytest.approx(1.5), True)  # static block cache: 9 ms / 6 ms roofline, batch 1 only
    assert targets[3] == (pytest.approx(0.5), False)  # 1 of the 2 tests that ran passed
    markdown = (out / "results.md").read_text()
    assert "| llada2mini | timeout |" in markdown and "| install | not run |" in markdown

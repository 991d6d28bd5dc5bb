"""Every example script that has a reduced mode runs to completion with `LLADA_HF_SMOKE=1` (each well under a minute
on 2 CPU cores; ~5 min for all of them)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(path for path in EXAMPLES_DIR.glob("**/*.py") if "LLADA_HF_SMOKE" in path.read_text())


def test_examples_are_found():
    names = {path.name for path in EXAMPLES}
    assert {"generate.py", "chat.py", "pipeline.py", "reversal_curse.py", "make_bundled_model.py"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: str(path.relative_to(EXAMPLES_DIR)))
def test_example_runs_in_smoke_mode(script, tmp_path):
    env = {**os.environ, "LLADA_HF_SMOKE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"

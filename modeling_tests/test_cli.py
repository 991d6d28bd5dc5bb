"""The `llada-hf` command: generate and chat with the bundled model, option checking, usage errors (~5 s, plus ~12 s
for the console-script check)."""

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llada_hf.cli import main


DEMO_PROMPT, DEMO_ANSWER = "Sort: 9 4 7 1 3", "1 3 4 7 9"  # README command 1


def run(argv, capsys) -> tuple[int, list[str]]:
    code = main(argv)
    return code, capsys.readouterr().out.splitlines()


def test_generate_answers_the_demo_prompt(capsys):
    code, lines = run(["generate", DEMO_PROMPT], capsys)
    assert code == 0
    assert lines == [DEMO_ANSWER]


def test_generate_takes_sampler_options(capsys):
    # Official names: an exact 16-token answer in 2 blocks of 8, 8 steps in all; a progress bar on stderr.
    argv = ["generate", "--gen-length", "16", "--block-length", "8", "--steps", "8", "--progress", DEMO_PROMPT]
    code, lines = run(argv, capsys)
    assert code == 0 and len(lines) == 1 and sorted(lines[0].split()) == lines[0].split()


def test_generate_shows_drafts(capsys):
    code = main(["generate", "--drafts", DEMO_PROMPT])
    out = capsys.readouterr().out
    assert code == 0
    drafts = re.compile(
        r"\x1b7\x1b\[33m.*?\x1b\[0m\x1b8\x1b\[J"
    )  # TextDiffusionStreamer: drawn in yellow, then erased
    assert drafts.search(out)
    assert drafts.sub("", out).strip() == DEMO_ANSWER


def test_chat_reads_piped_stdin_until_exit(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{DEMO_PROMPT}\n\nSort: 8 2 5\nexit\nSort: 2 1\n"))
    code, lines = run(["chat", "--no-history"], capsys)
    assert code == 0
    assert lines == [DEMO_ANSWER, "2 5 8"]  # the empty line is skipped; nothing is answered after `exit`


def test_chat_exits_on_eof_and_keeps_history(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{DEMO_PROMPT}\nSort: 8 2 5"))
    code, lines = run(["chat"], capsys)
    assert code == 0
    assert len(lines) == 2 and lines[0] == DEMO_ANSWER


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--steps", "0", "x"], "--steps must be >= 1"),
        (["generate", "--remasking", "sideways", "x"], "--remasking"),
        (["generate", "--temperature", "-1", "x"], "--temperature"),
        (["generate", "--gen-length", "10", "--block-length", "4", "x"], "multiple of --block-length"),
        (["generate", "--steps", "two", "x"], "invalid int value"),
        (["generate", "--dtype", "int3", "x"], "invalid choice"),
        (["generate"], "prompt"),
        (["summarize", "x"], "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_model_is_a_usage_error(tmp_path, capsys):
    for model, message in [(tmp_path / "missing", "no such model folder"), (tmp_path, "has no config.json")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["generate", "--model", str(model), "x"])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow  # two fresh interpreters: ~12 s, up to ~25 s on a loaded machine
def test_console_script_runs_offline():
    script = Path(sys.executable).parent / "llada-hf"
    if not script.exists():
        pytest.skip("the package is not installed with its console script (pip install -e .)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    result = subprocess.run([script, "generate", DEMO_PROMPT], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [DEMO_ANSWER]
    assert time.perf_counter() - start < 60
    result = subprocess.run([script, "generate", "--model", "/nonexistent/model", "x"], capture_output=True, text=True)
    assert result.returncode == 2 and "no such model folder" in result.stderr

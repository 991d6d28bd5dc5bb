"""`llada-hf` under bad input, as a careless user gives it: every failure is one line on stderr naming the problem, no
traceback, exit status 2 for usage and input errors and 130 for Ctrl-C; a long chat never outgrows the model's positions
(~40 s in-process, plus ~25 s for the few cases that need a real process)."""

import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from llada_hf import BUNDLED_MODEL_PATH, cli
from llada_hf.cli import main


DEMO_PROMPT = "Sort: 9 4 7 1 3"
LONG_PROMPT = "Sort: " + " ".join(["9 4 7 1 3"] * 30)  # ~150 tokens: more than the bundled model's 128 positions


def fail(argv, capsys) -> tuple[int, str]:
    """Runs `llada-hf argv` in-process; returns its exit status and its stderr, checked to be one error line."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), f"not one line: {err!r}"
    return code, err


def assert_usage_error(argv, capsys, *words):
    code, err = fail(argv, capsys)
    assert code == 2, err
    assert err.startswith("llada-hf"), err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"


# Refused before the model loads: options and the prompt.
@pytest.mark.parametrize(
    "flags, words",
    [
        (["--max-new-tokens", "0"], ["--max-new-tokens", ">= 1"]),
        (["--max-new-tokens", "-5"], ["--max-new-tokens"]),
        (["--gen-length", "0"], ["--gen-length", ">= 1"]),
        (["--gen-length", "10", "--block-length", "4"], ["multiple of --block-length"]),
        (["--steps", "0"], ["--steps", ">= 1"]),
        (["--steps", "1.5"], ["--steps", "invalid int value"]),
        (["--block-length", "0"], ["--block-length"]),
        (["--temperature", "nan"], ["--temperature", "finite"]),
        (["--temperature", "inf"], ["--temperature", "finite"]),
        (["--temperature", "-1"], ["--temperature"]),
        (["--temperature", "hot"], ["--temperature", "invalid float value"]),
        (["--top-p", "2"], ["--top-p", "(0, 1]"]),
        (["--top-p", "0"], ["--top-p"]),
        (["--top-k", "-1"], ["--top-k"]),
        (["--min-p", "2"], ["--min-p"]),
        (["--repetition-penalty", "0"], ["--repetition-penalty"]),
        (["--threshold", "nan"], ["--threshold", "finite"]),
        (["--cfg-scale", "nan"], ["--cfg-scale", "finite"]),
        (["--parallel-decoding", "factor", "--factor", "nan"], ["--factor", "finite"]),
        (["--parallel-decoding", "factor"], ["needs --factor"]),
        (["--remasking", "sideways"], ["--remasking", "invalid choice"]),
        (["--diffusion-cache", "huge"], ["--diffusion-cache", "invalid choice"]),
        (["--seed", "-1"], ["--seed", "between 0 and"]),
        (["--seed", str(2**64)], ["--seed", "between 0 and"]),
        (["--seed", "lucky"], ["--seed", "must be an integer"]),
        (["--dtype", "float8"], ["--dtype", "invalid choice"]),
        (["--attn-implementation", "magic"], ["--attn-implementation", "invalid choice"]),
        (["--device", "banana"], ["--device 'banana' is not a device"]),
        (["--device", "meta"], ["--device meta"]),
        (["--load-in-4bit", "--dtype", "float64"], ["--load-in-4bit", "float64"]),
        (["--bogus"], ["unrecognized arguments: --bogus"]),
    ],
)
def test_bad_option_is_one_usage_line(flags, words, capsys):
    assert_usage_error(["generate", *flags, DEMO_PROMPT], capsys, *words)


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], ["required"]),
        (["summarize", "x"], ["invalid choice"]),
        (["generate"], ["prompt"]),
        (["generate", "x", "--steps"], ["--steps", "expected one argument"]),
        (["generate", "--drafts=maybe", "x"], ["--drafts", "ignored explicit argument"]),
        (["generate", ""], ["the prompt is empty"]),
        (["generate", " \n\t"], ["the prompt is empty"]),
        (["generate", "Sort: \udcff 1"], ["the prompt is not UTF-8"]),  # an undecodable byte in argv
        (["chat", "--no-history", "extra"], ["unrecognized arguments: extra"]),
    ],
)
def test_bad_command_line_is_one_usage_line(argv, words, capsys):
    assert_usage_error(argv, capsys, *words)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_unavailable_device_is_a_usage_error(device, capsys):
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert_usage_error(["generate", "--device", device, DEMO_PROMPT], capsys, f"--device {device!r}", "not available")


# Model folders that do not load.
def _model_copy(tmp_path, change) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_PATH, folder)
    change(folder)
    return folder


def _write(name, text):
    return lambda folder: (folder / name).write_text(text)


def _edit_config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    return edit


@pytest.mark.parametrize(
    "change, words",
    [
        (_write("tokenizer.json", '{"broken'), ["cannot load its tokenizer"]),
        (_write("tokenizer.json", "{}"), ["cannot load its tokenizer"]),
        (lambda folder: (folder / "tokenizer.json").unlink(), ["cannot load its tokenizer"]),
        (lambda folder: (folder / "config.json").unlink(), ["has no config.json"]),
        (_write("config.json", "{"), ["cannot load its config.json", "not a valid JSON file"]),
        (_edit_config(model_type="nonsense"), ["cannot load its config.json", "nonsense"]),
        (_edit_config(d_model=None), ["cannot load its config.json", "'d_model' expected int, got NoneType"]),
        (
            _edit_config(architectures=["LLaDAMoEModelLM"]),
            ["cannot load its config.json", "LLaDA-MoE", "does not support it"],
        ),
        (lambda folder: (folder / "model.safetensors").unlink(), ["cannot load the model", "model.safetensors"]),
        (_write("model.safetensors", "truncated"), ["cannot load the model"]),
        (_write("generation_config.json", '{"steps": "x"}'), ["cannot load the model", "steps"]),
    ],
)
def test_broken_model_folder_is_one_usage_line(change, words, tmp_path, capsys):
    folder = _model_copy(tmp_path, change)
    assert_usage_error(["generate", "--model", str(folder), DEMO_PROMPT], capsys, f"--model '{folder}'", *words)


def test_missing_model_is_one_usage_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a model")
    for model in (tmp_path / "missing", tmp_path / "file", "not a hub id"):
        assert_usage_error(["generate", "--model", str(model), DEMO_PROMPT], capsys, "no such model folder")


def test_hub_id_offline_is_one_usage_line(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert_usage_error(["generate", "--model", "nobody/no-such-llada", DEMO_PROMPT], capsys, "cannot load")


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_missing_package_is_one_usage_line(capsys):
    argv = ["generate", "--attn-implementation", "flash_attention_2", DEMO_PROMPT]
    assert_usage_error(argv, capsys, "FlashAttention")


# Refused by generate() once the model is loaded.
@pytest.mark.parametrize(
    "flags, words",
    [
        (["--gen-length", "15"], ["--gen-length (15)", "multiple of --block-length (2)"]),
        (["--steps", "7"], ["--steps (7)", "divisible"]),
        (["--diffusion-cache", "block"], ["diffusion_cache='block'", "'prompt' block schedule"]),
        (["--editing-threshold", "0.5"], ["--editing-threshold", "LLaDA2"]),
        (["--block-length", "200"], ["block_length=200", "128 positions"]),
        (["--gen-length", "1000", "--steps", "1000"], ["1000", "maximum sequence length (128)"]),
        (["--mask-token-id", "500"], ["--mask-token-id (500)", "vocabulary"]),
    ],
)
def test_option_the_model_refuses_is_one_usage_line(flags, words, capsys):
    assert_usage_error(["generate", *flags, DEMO_PROMPT], capsys, *words)


@pytest.mark.parametrize("flags", [[], ["--no-chat-template"], ["--gen-length", "16", "--steps", "16"]])
def test_too_long_prompt_is_one_usage_line(flags, capsys):
    assert_usage_error(["generate", *flags, LONG_PROMPT], capsys, "128")


def test_unexpected_error_is_one_line_with_status_1(monkeypatch, capsys):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")

    monkeypatch.setattr(cli.ChatSession, "answer", out_of_memory)
    code, err = fail(["generate", DEMO_PROMPT], capsys)
    assert code == 1
    assert err == "llada-hf generate: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"


def test_redirected_stderr_gets_no_progress_bar(capsys):
    assert main(["generate", DEMO_PROMPT]) == 0
    assert capsys.readouterr().err == ""


# stdin (in-process: the streams are replaced; the real ones are checked in a subprocess below).
@pytest.mark.parametrize(
    "command, stdin, words",
    [
        (["generate", "-"], None, ["stdin is closed"]),
        (["chat"], None, ["stdin is closed"]),
        (["generate", "-"], io.StringIO(""), ["stdin is empty"]),
        (["generate", "-"], io.StringIO("Sort: \udcff 1\n"), ["stdin is not UTF-8"]),
        (["chat"], io.StringIO(f"{DEMO_PROMPT}\nSort: \udcff 1\n"), ["stdin is not UTF-8"]),
        (["generate", "-"], io.TextIOWrapper(io.BytesIO(b"Sort: \xff 1\n"), "utf-8"), ["stdin is not UTF-8"]),
        (["chat"], io.TextIOWrapper(io.BytesIO(b"Sort: \xff 1\n"), "utf-8"), ["stdin is not UTF-8"]),
        (["chat"], io.StringIO(f"{LONG_PROMPT}\n"), ["128"]),  # a message longer than the model, with no history
        (["chat", "--steps", "7"], io.StringIO(f"{DEMO_PROMPT}\n"), ["--steps (7)"]),
    ],
)
def test_bad_stdin_is_one_usage_line(command, stdin, words, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", stdin)
    assert_usage_error(command, capsys, *words)


def test_closed_stdin_object_is_a_usage_error(monkeypatch, capsys):
    stdin = io.StringIO(DEMO_PROMPT)
    stdin.close()
    monkeypatch.setattr(sys, "stdin", stdin)
    assert_usage_error(["generate", "-"], capsys, "stdin is closed")


class TerminalInput(io.StringIO):
    def isatty(self):
        return True


def test_interactive_chat_reports_a_bad_message_and_goes_on(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", TerminalInput(f"{LONG_PROMPT}\nSort: \udcff\n{DEMO_PROMPT}\nexit\n"))
    assert main(["chat", "--no-drafts"]) == 0
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 2 and "Traceback" not in captured.err
    assert "128 positions" in errors[0] or "128" in errors[0]
    assert "stdin is not UTF-8" in errors[1]
    assert "1 3 4 7 9" in captured.out  # the good message is still answered


# A long chat: the history is trimmed so that the prompt leaves room for the first canvas (or block).
@pytest.mark.parametrize(
    "flags, columns",
    [
        (["--block-length", "32"], 32),  # transformers' dialect: a canvas_length-16 canvas, rounded up to one block
        (["--max-new-tokens", "40", "--block-length", "4"], 16),  # the first canvas: canvas_length 16
        (["--gen-length", "64", "--block-length", "32", "--steps", "2"], 64),  # official: the whole answer
    ],
)
def test_long_chat_trims_its_history(flags, columns, monkeypatch, capsys):
    prompt_lengths = []
    load = cli.load

    def spy_load(parser, args):
        model, tokenizer = load(parser, args)
        generate = model.generate

        def spy_generate(input_ids, **kwargs):
            prompt_lengths.append(input_ids.shape[1])
            return generate(input_ids, **kwargs)

        model.generate = spy_generate
        return model, tokenizer

    monkeypatch.setattr(cli, "load", spy_load)
    messages = [f"Sort: 9 4 7 1 3 8 2 6 5 {turn}" for turn in range(6)]  # outgrows the positions on turn 4 or 5
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(messages) + "\n"))
    assert main(["chat", "--no-drafts", *flags]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and len(captured.out.splitlines()) == len(messages)
    assert len(prompt_lengths) == len(messages)
    assert max(prompt_lengths) + columns <= 128  # room for what generate() needs first
    assert prompt_lengths[1] > prompt_lengths[0]  # the history is kept while it fits
    # ... and the whole history would not have fit by the last turn.
    answers = captured.out.splitlines()
    history = [turn for pair in zip(messages, answers) for turn in ({"role": "user", "content": pair[0]}, pair[1])]
    history = [turn if isinstance(turn, dict) else {"role": "assistant", "content": turn} for turn in history]
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL_PATH)
    whole = tokenizer.apply_chat_template(history[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert len(whole) + columns > 128


# Real processes: the real stdin and signals.
def _default_sigint():
    """Run in the child before exec: a job started in the background by a non-interactive shell (`pytest ... &`)
    inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt; a terminal's Ctrl-C finds the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(argv, env=None, close_stdin=False):
    command = [sys.executable, "-m", "llada_hf.cli", *argv]
    if close_stdin:
        command = ["sh", "-c", 'exec "$0" "$@" <&-', *command]
    return subprocess.Popen(
        command,
        stdin=None if close_stdin else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        preexec_fn=_default_sigint,
    )


@pytest.mark.slow  # five interpreters at once: ~30 s on two cores
def test_real_stdin_and_ctrl_c():
    bad_bytes = b"Sort: \xff\xfe 3 1\n"
    cases = [  # (process, its stdin, what stderr names)
        (_start(["generate", "-"], close_stdin=True), None, "stdin is closed"),
        (_start(["generate", "-"]), bad_bytes, "stdin is not UTF-8"),  # Python's surrogateescape decoder
        (_start(["chat"], env={"PYTHONIOENCODING": "utf-8:strict"}), bad_bytes, "stdin is not UTF-8"),
    ]
    broken_pipe = _start(["generate", DEMO_PROMPT])
    broken_pipe.stdout.close()  # `llada-hf generate ... | head -c0`
    ctrl_c = _start(["chat", "--no-history"])
    # Ctrl-C while answering a stream of messages: once the first answer is out, the next ones are being generated.
    ctrl_c.stdin.write(f"{DEMO_PROMPT}\n".encode() * 200)
    ctrl_c.stdin.flush()
    first_answer = ctrl_c.stdout.readline()
    ctrl_c.send_signal(signal.SIGINT)
    assert ctrl_c.wait(timeout=120) == 130
    assert first_answer == b"1 3 4 7 9\n"
    assert ctrl_c.stderr.read() == b"llada-hf chat: interrupted.\n"  # no traceback, no progress bar
    ctrl_c.stdin.close()
    assert broken_pipe.wait(timeout=120) == 141
    assert broken_pipe.stderr.read() == b""
    for process, stdin, words in cases:
        _, err = process.communicate(stdin, timeout=120)
        err = err.decode()
        assert process.returncode == 2, (process.args, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (process.args, err)
        assert words in err, (process.args, err)


@pytest.mark.slow  # one interpreter: a few seconds
def test_ctrl_c_while_the_package_is_imported():
    """The console entry point (`llada_hf_cli`) imports the package, torch and transformers (seconds); a Ctrl-C there
    ends the command with one line and exit code 130, as during generation."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys, llada_hf_cli; sys.exit(llada_hf_cli.main())", "generate", DEMO_PROMPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        preexec_fn=_default_sigint,
    )
    time.sleep(1.0)  # the interpreter is up and importing torch
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err == b"llada-hf: interrupted.\n"

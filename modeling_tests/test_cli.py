"""The `llada-hf` command: generate and chat with the bundled model, sampler flags derived from the generation config,
model loading options, option checking, usage errors, Ctrl-C (~30 s, plus ~12 s for the console-script check)."""

import argparse
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from llada_hf import cli
from llada_hf.cli import NON_CLI_FIELDS, build_parser, main, sampler_kwargs_from_args
from llada_hf.generation import DiffusionGenerationConfig


DEMO_PROMPT, DEMO_ANSWER = "Sort: 9 4 7 1 3", "1 3 4 7 9"  # README command 1
# Standard `GenerationConfig` fields the diffusion sampler honours (at least these).
STANDARD_SAMPLING_FIELDS = (
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "do_sample",
    "repetition_penalty",
    "min_p",
)
SAMPLER_FIELDS = sorted(
    (set(DiffusionGenerationConfig.diffusion_fields) - set(NON_CLI_FIELDS)) | set(STANDARD_SAMPLING_FIELDS)
)


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


@pytest.fixture
def loaded(monkeypatch):
    """Spies on `cli.load`: records the loaded model and the sampler keywords of its `generate()` calls, which still
    run."""
    record = SimpleNamespace(model=None, generate_kwargs=[])
    load = cli.load

    def spy_load(parser, args):
        model, tokenizer = load(parser, args)
        generate = model.generate

        def spy_generate(*args, **kwargs):
            assert kwargs["tokenizer"] is tokenizer  # for stop strings
            record.generate_kwargs.append({k: v for k, v in kwargs.items() if k not in ("streamer", "tokenizer")})
            return generate(*args, **kwargs)

        model.generate = spy_generate
        record.model = model
        return model, tokenizer

    monkeypatch.setattr(cli, "load", spy_load)
    return record


def _generate_parser():
    return build_parser()._subparsers._group_actions[0].choices["generate"]


@pytest.mark.parametrize("field", SAMPLER_FIELDS)
def test_every_sampler_field_has_a_flag(field):
    flag = "--" + field.replace("_", "-")
    action = next((action for action in _generate_parser()._actions if flag in action.option_strings), None)
    assert action is not None, f"no {flag} for the generation config field `{field}`"
    if action.nargs == 0:  # --flag / --no-flag
        cases = [([flag], True), (["--no-" + flag[2:]], False)]
    elif action.choices:
        cases = [([flag, value], value) for value in action.choices]
    else:
        value = action.type("1")
        cases = [([flag, "1"], [value] if isinstance(action, argparse._AppendAction) else value)]
        if isinstance(action, argparse._AppendAction):  # a list-valued field
            cases.append(([flag, "1", flag, "2"], [value, action.type("2")]))
    for flag_argv, value in cases:
        args = build_parser().parse_args(["generate", *flag_argv, "x"])
        assert sampler_kwargs_from_args(args)[field] == value


def test_only_given_sampler_flags_are_passed():
    args = build_parser().parse_args(["generate", "--steps", "8", "x"])
    assert sampler_kwargs_from_args(args) == {"steps": 8}  # the rest keeps the saved generation config
    args = build_parser().parse_args(
        ["generate", "--temperature", "0.5", "--max-new-tokens", "8", "--gen-length", "16", "x"]
    )
    assert sampler_kwargs_from_args(args) == {"temperature": 0.5, "do_sample": True, "gen_length": 16}


def test_new_generation_config_fields_get_flags(monkeypatch):
    class Config(DiffusionGenerationConfig):
        diffusion_fields = (*DiffusionGenerationConfig.diffusion_fields, "fresh_length", "fresh_mode", "fresh_ids")

    monkeypatch.setattr(cli, "DiffusionGenerationConfig", Config)
    argv = ["--fresh-length", "64", "--fresh-mode", "fast", "--fresh-ids", "[1, 2]", "--factor", "2"]
    args = build_parser().parse_args(["generate", *argv, "x"])
    expected = {"fresh_length": 64, "fresh_mode": "fast", "fresh_ids": [1, 2], "factor": 2.0}
    assert sampler_kwargs_from_args(args) == expected


def test_sampler_flags_reach_generate(loaded, capsys):
    argv = ["--gen-length", "16", "--block-length", "8", "--steps", "8", "--remasking", "margin", "--eos-early-stop"]
    code, lines = run(["generate", *argv, "--progress", DEMO_PROMPT], capsys)
    assert code == 0 and len(lines) == 1 and sorted(lines[0].split()) == lines[0].split()
    [kwargs] = loaded.generate_kwargs
    expected = {"gen_length": 16, "block_length": 8, "steps": 8, "remasking": "margin", "eos_early_stop": True}
    assert kwargs == {**expected, "show_progress": True}


def test_standard_processor_flags_reach_generate(loaded, capsys):
    flags = ["--repetition-penalty", "1.0", "--suppress-tokens", "31", "--suppress-tokens", "32"]
    code, lines = run(["generate", *flags, DEMO_PROMPT], capsys)
    assert code == 0 and lines == [DEMO_ANSWER]
    assert loaded.generate_kwargs == [{"repetition_penalty": 1.0, "suppress_tokens": [31, 32]}]


@pytest.mark.parametrize(
    "rule, flag, value",
    [("factor", "--factor", 1.0), ("entropy_bound", "--entropy-bound", 0.1), ("threshold", "--threshold", 0.9)],
)
def test_parallel_decoding_takes_its_parameter(rule, flag, value, loaded, capsys):
    code, lines = run(["generate", "--parallel-decoding", rule, flag, str(value), DEMO_PROMPT], capsys)
    assert code == 0 and len(lines) == 1 and sorted(lines[0].split()) == lines[0].split()
    assert loaded.generate_kwargs[0] == {"parallel_decoding": rule, rule: value}
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--parallel-decoding", rule, DEMO_PROMPT])
    assert exit_info.value.code == 2 and f"needs {flag}" in capsys.readouterr().err


def test_device_auto_loads_with_accelerate(monkeypatch, capsys):
    calls = _record_from_pretrained(monkeypatch)
    code, lines = run(["generate", "--device", "auto", DEMO_PROMPT], capsys)
    assert code == 0 and lines == [DEMO_ANSWER]
    assert calls["model"]["device_map"] == "auto"


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_is_set(implementation, loaded, capsys):
    code, lines = run(["generate", "--attn-implementation", implementation, DEMO_PROMPT], capsys)
    assert code == 0 and lines == [DEMO_ANSWER]
    assert loaded.model.config._attn_implementation == implementation


def test_revision_is_passed_to_tokenizer_and_model(monkeypatch, capsys):
    calls = _record_from_pretrained(monkeypatch)
    code, lines = run(["generate", "--revision", "v1.0", DEMO_PROMPT], capsys)
    assert code == 0 and lines == [DEMO_ANSWER]
    assert calls["tokenizer"]["revision"] == calls["model"]["revision"] == "v1.0"


def _record_from_pretrained(monkeypatch) -> dict:
    """Records the keywords `cli.load` passes to the tokenizer's and the model's `from_pretrained`."""
    calls = {}

    def recording(kind, from_pretrained):
        def record(location, **kwargs):
            calls[kind] = kwargs
            return from_pretrained(location, **kwargs)

        return SimpleNamespace(from_pretrained=record)

    monkeypatch.setattr(cli, "AutoTokenizer", recording("tokenizer", AutoTokenizer.from_pretrained))
    monkeypatch.setattr(cli, "AutoModelForCausalLM", recording("model", AutoModelForCausalLM.from_pretrained))
    return calls


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_ctrl_c_during_generation_exits_cleanly(command, monkeypatch, capsys):
    load = cli.load

    def load_interrupted_model(parser, args):
        model, tokenizer = load(parser, args)

        def generate(input_ids, streamer=None, **kwargs):
            streamer.put(input_ids)  # the prompt (skipped)
            streamer.put_draft(input_ids)
            raise KeyboardInterrupt

        model.generate = generate
        return model, tokenizer

    monkeypatch.setattr(cli, "load", load_interrupted_model)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{DEMO_PROMPT}\nSort: 8 2 5\n"))
    assert main([command, "--drafts", DEMO_PROMPT] if command == "generate" else [command, "--drafts"]) == 130
    captured = capsys.readouterr()
    assert captured.out.endswith("\x1b8\x1b[J\n")  # the draft is erased
    assert captured.err == f"llada-hf {command}: interrupted.\n"  # one line, no traceback


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
    result = subprocess.run(
        [script, "generate", DEMO_PROMPT], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [DEMO_ANSWER]
    assert time.perf_counter() - start < 60
    result = subprocess.run(
        [script, "generate", "--model", "/nonexistent/model", "x"], check=False, capture_output=True, text=True
    )
    assert result.returncode == 2 and "no such model folder" in result.stderr

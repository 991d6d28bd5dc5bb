"""The `llada-hf` command: generate with, or chat with, a LLaDA model from the terminal.

    llada-hf generate "Sort: 9 4 7 1 3"                  # the bundled tiny model, offline, on CPU
    llada-hf chat                                          # interactive; also reads piped stdin
    llada-hf generate --model GSAI-ML/LLaDA-8B-Instruct --device cuda --dtype bfloat16 \\
        --gen-length 128 --steps 128 --block-length 32 "Explain diffusion language models."

Without `--model`, the tiny instruction-following LLaDA shipped with the package is used (see
`model_cards/bundled-tiny-llada.md`). Every sampler field of `DiffusionGenerationConfig` has its flag (`--steps`,
`--parallel-decoding`, `--factor`, ...); unset flags keep the model's saved generation config. When stdout is a
terminal, the denoising drafts are shown as they change (`TextDiffusionStreamer`).

Every failure is one line on stderr: exit status 2 for a usage or input error (a bad option, an option the model
refuses, a model folder that does not load, an unreadable prompt), 130 for Ctrl-C, 1 for anything else. A closed
stdout (`| head -1`) ends it quietly with status 141.
"""

import argparse
import inspect
import json
import math
import os
import re
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TextDiffusionStreamer, TextStreamer
from transformers.utils import logging

from . import BUNDLED_MODEL_PATH
from .generation import DiffusionGenerationConfig
from .generation.configuration_diffusion import (
    BLOCK_SCHEDULES,
    CACHE_IMPLEMENTATIONS,
    DIFFUSION_CACHES,
    PARALLEL_DECODING,
    REMASKING_STRATEGIES,
)
from .generation.utils import OFFICIAL_KEYWORDS


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")
# `owner/name` (the Hub's repo-id syntax); anything else that is not an existing folder is a missing local path.
HUB_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
EXIT_COMMANDS = {"exit", "quit"}
EXIT_USAGE = 2  # argparse's status for usage errors; also used for bad input (prompt, model folder, stdin)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as shells report a writer whose reader has gone
MAX_SEED = 2**64 - 1  # torch.manual_seed's range

# Sampler flags are derived from `DiffusionGenerationConfig`: each of its `diffusion_fields` and each standard field its
# docstring documents gets `--field-name`, typed and described by that docstring. Unset flags keep the model's saved
# generation config. Fields with no meaning on a command line get no flag:
NON_CLI_FIELDS = ("output_history", "return_dict_in_generate", "compile_config", "num_return_sequences")
FIELD_CHOICES = {
    "block_schedule": BLOCK_SCHEDULES,
    "remasking": REMASKING_STRATEGIES,
    "parallel_decoding": PARALLEL_DECODING,
    "diffusion_cache": DIFFUSION_CACHES,
    "cache_implementation": CACHE_IMPLEMENTATIONS,
}
FIELD_ALIASES = {"show_progress": ("--progress",)}
# Help for the fields whose docstring's first sentence does not suit a command line; the others use that sentence.
FIELD_HELP = {
    "max_new_tokens": "The most answer tokens (the answer ends at its first EOS). With --steps, the exact answer "
    "length (official semantics).",
    "steps": "Denoising steps: in total for the 'prompt' block schedule (LLaDA 1.x), per block for 'absolute' "
    "(LLaDA2.0). Like --gen-length, it selects the official sampler's semantics.",
    "temperature": "0 is greedy; above 0 samples (and implies --do-sample).",
    "do_sample": "Sample rather than decode greedily.",
    "cache_implementation": "'static' with --diffusion-cache block or dual: preallocated keys/values and fixed-shape "
    "steps, compiled on CUDA.",
    "disable_compile": "Run the steps of the static cache eagerly.",
}
DOCSTRING_TYPES = {"int": int, "float": float, "str": str}


def documented_fields() -> dict[str, tuple[str, str, str]]:
    """`{field: (section, type, help)}` from the `Args:` of the `DiffusionGenerationConfig` docstring (transformers'
    format, with `> Section` lines); the help is the description's first sentence."""
    args = (inspect.getdoc(DiffusionGenerationConfig) or "").partition("\nArgs:\n")[2]
    section, entries = "", []
    for line in args.splitlines():
        if line.startswith("    > "):
            section = line[6:].strip()
        elif re.match(r" {4}\w", line):
            entries.append((section, re.findall(r"(?:^|, )(\w+)(?: \(([^)]*)\))?", line.strip()), []))
        elif line.startswith("        ") and entries:
            entries[-1][2].append(line.strip())
        elif line.strip():
            break  # the next docstring section
    fields = {}
    for section, names, lines in entries:
        description = " ".join(lines[: next((i for i, line in enumerate(lines) if line.startswith("- ")), None)])
        first_sentence = re.match(r"(.+?\.)(?:\s|$)", description)
        help_text = re.sub(r"\[`([\w.]+)`\]|`", r"\1", first_sentence[1] if first_sentence else description)
        fields.update({name: (section, kind, help_text) for name, kind in names})
    return fields


def sampler_fields() -> tuple[str, ...]:
    """The `DiffusionGenerationConfig` fields that get a flag, in docstring order: the diffusion fields and the
    documented standard ones, less `NON_CLI_FIELDS`."""
    config = DiffusionGenerationConfig()
    documented = [name for name in documented_fields() if hasattr(config, name)]
    undocumented = [name for name in DiffusionGenerationConfig.diffusion_fields if name not in documented]
    return tuple(name for name in documented + undocumented if name not in NON_CLI_FIELDS)


def _json_or_text(text: str):
    """The value of a flag whose field has no documented type: JSON (`1.2`, `true`, `[5, 7]`), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _seed(text: str) -> int:
    """`--seed`: an integer in torch's seed range."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED}, got {seed}")
    return seed


class OneLineArgumentParser(argparse.ArgumentParser):
    """Prints usage errors on one line (`llada-hf generate: error: ...`) and exits with status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(message) -> str:
    """The first non-empty line of `message` (an exception's text or a string), with the next one if it ends with a
    colon, whitespace collapsed."""
    lines = [" ".join(line.split()) for line in str(message).splitlines()]
    lines = [line for line in lines if line] or [""]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    if isinstance(message, BaseException) and (not text or isinstance(message, KeyError)):
        text = f"{type(message).__name__}: {text}".rstrip(": ")
    return text


def _add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    documented = documented_fields()
    groups = {}
    for name in sampler_fields():
        section, kind, help_text = documented.get(name, ("", "", f"The generation config's {name}."))
        help_text = FIELD_HELP.get(name, help_text)
        title = f"sampler: {section.lower()}" if section else "sampler"
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        options = {"dest": name, "default": None, "help": help_text.replace("%", "%%")}
        first_type = re.search(r"`([^`]+)`", kind)  # `int` or `list[int]` -> int, repeatable for a list
        first_type = first_type[1] if first_type else None
        if first_type == "bool":
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.update(type=DOCSTRING_TYPES.get(first_type, _json_or_text), choices=FIELD_CHOICES.get(name))
            if first_type not in DOCSTRING_TYPES:
                options["metavar"] = "JSON"
        if "list[" in kind:
            options.update(action="append", help=options["help"] + " Repeat the flag for several.")
        flag = "--" + name.replace("_", "-")
        groups[title].add_argument(flag, *FIELD_ALIASES.get(name, ()), **options)
        if name == "max_new_tokens":
            groups[title].add_argument(
                "--gen-length",
                type=int,
                default=None,
                help="Official name: exact answer length (a multiple of --block-length for LLaDA 1.x). Like --steps, "
                "it selects the official sampler's semantics.",
            )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="llada-hf", description="Generate with, or chat with, a masked-diffusion LLaDA model."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,chat}")
    common = OneLineArgumentParser(add_help=False)
    model = common.add_argument_group("model")
    model.add_argument("--model", default=BUNDLED_MODEL_PATH, help="local folder or Hub id (default: bundled model)")
    model.add_argument("--revision", default=None, help="Hub revision: branch, tag or commit (default: main)")
    model.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1, mps, ..., or auto (accelerate's device_map='auto') (default: cuda if available)",
    )
    model.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="weights dtype (default: saved)")
    model.add_argument(
        "--attn-implementation",
        choices=ATTENTION_IMPLEMENTATIONS,
        default=None,
        help="attention kernel (default: sdpa)",
    )
    model.add_argument("--load-in-4bit", action="store_true", help="quantize the weights to 4 bits (bitsandbytes)")
    model.add_argument("--system", default=None, help="system prompt (chat template)")
    model.add_argument("--no-chat-template", action="store_true", help="feed the text as is (base models)")
    sampler = common.add_argument_group("sampler", "Unset options keep the model's generation_config.json.")
    sampler.add_argument("--seed", type=_seed, default=None, help="random seed (sampling, random remasking)")
    _add_sampler_arguments(common)
    display = common.add_argument_group("display")
    display.add_argument(
        "--drafts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show the denoising drafts (default: when stdout is a terminal)",
    )

    generate = commands.add_parser("generate", parents=[common], help="answer one prompt and exit")
    generate.add_argument("prompt", help="the prompt (use - to read it from stdin)")
    chat = commands.add_parser("chat", parents=[common], help="interactive chat; reads stdin until EOF or `exit`")
    chat.add_argument("--no-history", action="store_true", help="answer each message on its own")
    for command in (generate, chat):
        command.set_defaults(command_parser=command)  # usage errors show the subcommand's usage
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parser = args.command_parser
    try:
        return run(parser, args)
    except KeyboardInterrupt:
        _report("interrupted.", parser, newline=sys.stderr.isatty())  # after the terminal's `^C`
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout has gone (`| head -1`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush does not fail too
        return EXIT_BROKEN_PIPE
    except (ValueError, TypeError) as error:  # generate() refuses the options or the input, e.g. a too long prompt
        parser.error(_as_option_names(_one_line(error), parser))
    except Exception as error:  # noqa: BLE001 -- anything else (out of memory, ...): one line, no traceback
        _report(f"{type(error).__name__}: {_one_line(error)}", parser)
        return 1


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Checks the options and the input (usage errors), loads the model, and answers the prompt or the chat."""
    sampler_kwargs = sampler_kwargs_from_args(args)
    _check_sampler_options(parser, sampler_kwargs)
    _check_device(parser, args.device)
    if args.command == "generate":
        prompt = _read_prompt(parser, args.prompt)
    elif sys.stdin is None or sys.stdin.closed:
        parser.error("stdin is closed: chat reads the messages from stdin.")
    if args.seed is not None:
        torch.manual_seed(args.seed)
    model, tokenizer = load(parser, args)
    session = ChatSession(model, tokenizer, args, sampler_kwargs)
    if args.command == "generate":
        session.answer(prompt)
        return 0
    return session.loop(sys.stdin, interactive=sys.stdin.isatty())


def _report(message: str, parser: argparse.ArgumentParser, newline: bool = False) -> None:
    """Prints `message` as the command's one-line error on stderr."""
    print(("\n" if newline else "") + f"{parser.prog}: {message}", file=sys.stderr, flush=True)


def _read_prompt(parser: argparse.ArgumentParser, prompt: str) -> str:
    """The prompt argument, or stdin's text for `-`; a usage error if it is closed, not UTF-8 or empty."""
    source = "stdin" if prompt == "-" else "the prompt"
    if prompt == "-" and (sys.stdin is None or sys.stdin.closed):
        parser.error("stdin is closed: pipe the prompt in, or give it as an argument instead of `-`.")
    try:
        prompt = _utf8_text(sys.stdin.read if prompt == "-" else lambda: prompt, source)
    except ValueError as error:
        parser.error(str(error))
    if not prompt.strip():
        parser.error(f"{source} is empty: give the text to answer.")
    return prompt


def _utf8_text(read, source: str) -> str:
    """`read()`, or a `ValueError` naming `source` if it is not UTF-8 text: a strict decoder raises, argv and a C-locale
    stdin keep undecodable bytes as surrogates."""
    try:
        text = read()
        text.encode("utf-8")
    except UnicodeError:
        raise ValueError(f"{source} is not UTF-8 text.") from None
    return text


def _check_device(parser: argparse.ArgumentParser, name: str | None) -> None:
    """Refuses an unknown or unavailable `--device` before the model load."""
    if name is None or name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device {name!r} is not a device: use cpu, cuda, cuda:1, mps, ... or auto.")
    if device.type == "meta":
        parser.error("--device meta holds no weights to generate with: use cpu, cuda, mps, ... or auto.")
    try:
        torch.empty(0, device=device)
    except (AssertionError, RuntimeError, NotImplementedError) as error:  # torch asserts a CUDA build
        parser.error(f"--device {name!r} is not available here ({_one_line(error)}).")


def sampler_kwargs_from_args(args: argparse.Namespace) -> dict:
    """The `generate()` keywords of the sampler flags the user gave."""
    names = (*sampler_fields(), "gen_length")
    kwargs = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if "gen_length" in kwargs and "max_new_tokens" in kwargs:
        kwargs.pop("max_new_tokens")  # the official name wins, as in `generate()`
    if kwargs.get("temperature", 0) > 0:
        kwargs.setdefault("do_sample", True)
    return kwargs


def _check_sampler_options(parser: argparse.ArgumentParser, kwargs: dict) -> None:
    """Rejects bad sampler options before the (possibly long) model load, as argparse errors (exit code 2)."""
    try:
        DiffusionGenerationConfig(**kwargs).validate()
    except (ValueError, TypeError) as error:
        parser.error(_as_option_names(str(error), parser))
    block_length, gen_length = kwargs.get("block_length"), kwargs.get("gen_length")
    if gen_length is not None and gen_length < 1:
        parser.error(f"--gen-length must be >= 1, got {gen_length}.")
    if gen_length is not None and block_length is not None and gen_length % block_length:
        parser.error(f"--gen-length ({gen_length}) must be a multiple of --block-length ({block_length}).")


def _as_option_names(message: str, parser: argparse.ArgumentParser) -> str:
    """`max_new_tokens` -> `--max-new-tokens` in error messages, for the names that are options of `parser`."""
    options = {option for action in parser._actions for option in action.option_strings}

    def as_option(match: re.Match) -> str:
        option = "--" + match[1].replace("_", "-")
        return option if option in options else match[0]

    return re.sub(r"`(\w+)`", as_option, message)


def load(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """`(model, tokenizer)` from `args.model` (local folder or Hub id); a usage error if either does not load."""
    location = args.model
    local = Path(location).expanduser()
    if not local.is_dir() and (local.exists() or not HUB_REPO_ID.match(location)):
        parser.error(f"--model {location!r}: no such model folder (give a local folder with config.json or a Hub id).")
    if local.is_dir():
        location = str(local)
        if not (local / "config.json").is_file():
            parser.error(f"--model {location!r}: the folder has no config.json.")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_kwargs = {
        "dtype": "auto" if args.dtype == "auto" else DTYPES[args.dtype],
        "revision": args.revision,
        "attn_implementation": args.attn_implementation,
    }
    if args.load_in_4bit:
        from transformers import BitsAndBytesConfig

        if args.dtype == "float64":
            parser.error("--load-in-4bit computes in float32, bfloat16 or float16, not --dtype float64.")
        compute_dtype = DTYPES.get(args.dtype, torch.bfloat16)
        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype
        )
    if args.load_in_4bit or device == "auto":
        model_kwargs["device_map"] = device  # placed by accelerate while loading
    # Any failure here comes from the folder or the loading options (bad files, a missing package, no network).
    try:
        config = AutoConfig.from_pretrained(location, revision=args.revision)
    except Exception as error:  # noqa: BLE001
        parser.error(f"--model {location!r}: cannot load its config.json ({_one_line(error)}).")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=args.revision, config=config)
    except Exception as error:  # noqa: BLE001
        parser.error(f"--model {location!r}: cannot load its tokenizer ({_one_line(error)}).")
    progress_bars = logging.is_progress_bar_enabled()
    if not sys.stderr.isatty():
        logging.disable_progress_bar()  # keeps a redirected stderr for errors
    try:
        model = AutoModelForCausalLM.from_pretrained(location, config=config, **model_kwargs)
    except Exception as error:  # noqa: BLE001
        parser.error(f"--model {location!r}: cannot load the model ({_one_line(error)}).")
    finally:
        if progress_bars:
            logging.enable_progress_bar()
    if "device_map" not in model_kwargs:
        model.to(device)
    return model.eval(), tokenizer


class ChatSession:
    """Formats messages with the chat template, generates, and prints answers (with drafts on a terminal)."""

    def __init__(self, model, tokenizer, args: argparse.Namespace, sampler_kwargs: dict):
        self.model, self.tokenizer, self.sampler_kwargs = model, tokenizer, sampler_kwargs
        self.use_chat_template = tokenizer.chat_template is not None and not args.no_chat_template
        self.system, self.parser = args.system, args.command_parser
        self.keep_history = args.command == "chat" and not args.no_history
        self.show_drafts = sys.stdout.isatty() if args.drafts is None else args.drafts
        self.history: list[dict[str, str]] = []
        self.stop_ids = {tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
        self.stop_ids -= {tokenizer.unk_token_id, tokenizer.bos_token_id, None}

    def loop(self, stream, interactive: bool) -> int:
        """Answers every line of `stream` until EOF or `exit`/`quit`. A message that cannot be answered (not UTF-8,
        refused by `generate()`) raises `ValueError`/`TypeError`, or, when `interactive`, is reported on stderr and
        skipped."""
        if interactive:
            print("Chatting with a diffusion model. Type `exit` or press Ctrl-D to quit.")
        while True:
            if interactive:
                print("> ", end="", flush=True)
            try:
                line = _utf8_text(stream.readline, "stdin")
                if not line or line.strip().lower() in EXIT_COMMANDS:
                    return 0
                if line.strip():
                    self.answer(line.strip())
            except (ValueError, TypeError) as error:
                if not interactive:
                    raise
                _report(f"error: {_as_option_names(_one_line(error), self.parser)}", self.parser)

    def answer(self, text: str) -> str:
        input_ids = self._prompt_ids(text).to(self.model.device)
        streamer = self._streamer()
        try:
            sequences = self.model.generate(
                input_ids, streamer=streamer, tokenizer=self.tokenizer, **self.sampler_kwargs
            )
        except KeyboardInterrupt:
            if streamer is not None:
                streamer.end()  # erases the draft, keeps the committed text
            raise
        answer = self._decode(sequences[0, input_ids.shape[1] :])
        if streamer is None:
            print(answer, flush=True)
        if self.keep_history:
            self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        return answer

    def _prompt_ids(self, text: str) -> torch.Tensor:
        if not self.use_chat_template:
            return self.tokenizer(text, return_tensors="pt", verbose=False).input_ids  # generate() checks the length
        system = [{"role": "system", "content": self.system}] if self.system else []
        history = list(self.history)
        while True:
            messages = system + history + [{"role": "user", "content": text}]
            input_ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", tokenizer_kwargs={"verbose": False}
            )
            input_ids = input_ids["input_ids"] if not torch.is_tensor(input_ids) else input_ids
            answer_columns, max_length = self._answer_room()
            if not history or input_ids.shape[1] + answer_columns <= max_length:
                return input_ids
            history = history[2:]  # drop the oldest exchange to fit the model's context

    def _answer_room(self) -> tuple[int, int]:
        """`(columns, positions)`: the answer columns a prompt must leave room for within the first `positions` of the
        model. The official dialect (`--gen-length`, `--steps`) needs its whole canvas, rounded up to whole blocks
        (LLaDA 1.x); transformers' dialect grows the answer a canvas (LLaDA 1.x) or a block (block-causal models) at a
        time and needs its first one. Blocks aligned to position 0 must end within the positions."""
        kwargs, config = self.sampler_kwargs, self.model.generation_config
        block_length = kwargs.get("block_length", config.block_length)
        max_length = getattr(self.model.config, "max_position_embeddings", None) or sys.maxsize
        answer_length = kwargs.get("gen_length") or kwargs.get("max_new_tokens") or config.max_new_tokens
        official = not OFFICIAL_KEYWORDS.isdisjoint(kwargs)
        if kwargs.get("block_schedule", config.block_schedule) == "absolute":
            columns = answer_length if official else min(answer_length, block_length)
            return columns, max_length // block_length * block_length
        if not official:
            answer_length = min(answer_length, kwargs.get("canvas_length") or config.canvas_length or answer_length)
        return math.ceil(answer_length / block_length) * block_length, max_length

    def _decode(self, answer_ids: torch.Tensor) -> str:
        """The answer up to its first end-of-turn / EOS token."""
        answer_ids = answer_ids.tolist()
        end = next((i for i, token in enumerate(answer_ids) if token in self.stop_ids), len(answer_ids))
        return self.tokenizer.decode(answer_ids[:end], skip_special_tokens=True).strip()

    def _streamer(self) -> TextStreamer | None:
        if not self.show_drafts:
            return None
        return TextDiffusionStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)


if __name__ == "__main__":
    sys.exit(main())

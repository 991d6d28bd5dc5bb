"""The `llada-hf` command: generate with, or chat with, a LLaDA model from the terminal.

    llada-hf generate "Sort: 9 4 7 1 3"                  # the bundled tiny model, offline, on CPU
    llada-hf chat                                          # interactive; also reads piped stdin
    llada-hf generate --model GSAI-ML/LLaDA-8B-Instruct --device cuda --dtype bfloat16 \\
        --gen-length 128 --steps 128 --block-length 32 "Explain diffusion language models."

Without `--model`, the tiny instruction-following LLaDA shipped with the package is used (see
`model_cards/bundled-tiny-llada.md`). Sampler options default to the model's saved generation config. When stdout is
a terminal, the denoising drafts are shown as they change (`TextDiffusionStreamer`).
"""

import argparse
import re
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextDiffusionStreamer, TextStreamer

from . import BUNDLED_MODEL_PATH
from .generation import DiffusionGenerationConfig


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
# `owner/name` (the Hub's repo-id syntax); anything else that is not an existing folder is a missing local path.
HUB_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
EXIT_COMMANDS = {"exit", "quit"}

# Sampler options: (flag, generate() keyword, type, help). Unset options keep the model's saved generation config.
SAMPLER_OPTIONS = (
    ("--max-new-tokens", "max_new_tokens", int, "answer length (the canvas is rounded up to whole blocks)"),
    (
        "--gen-length",
        "gen_length",
        int,
        "official name: exact answer length, a multiple of --block-length (LLaDA 1.x)",
    ),
    ("--steps", "steps", int, "denoising steps (LLaDA 1.x: in total; LLaDA2.0: per block)"),
    ("--block-length", "block_length", int, "tokens per block (semi-autoregressive decoding)"),
    ("--temperature", "temperature", float, "0 is greedy; above 0 samples"),
    ("--top-k", "top_k", int, "top-k filter before sampling (LLaDA2.0)"),
    ("--top-p", "top_p", float, "top-p filter before sampling (LLaDA2.0)"),
    ("--remasking", "remasking", str, "low_confidence (official default), margin, entropy or random"),
    ("--cfg-scale", "cfg_scale", float, "classifier-free guidance scale (0 disables it)"),
    ("--threshold", "threshold", float, "confidence threshold for committing several tokens per step (LLaDA2.0)"),
    ("--editing-threshold", "editing_threshold", float, "LLaDA2.1 token editing: rewrite committed tokens above it"),
    ("--max-post-steps", "max_post_steps", int, "LLaDA2.1 token editing: editing-only steps per block (default 16)"),
    ("--parallel-decoding", "parallel_decoding", str, "quota (official), threshold, factor or entropy_bound"),
    ("--diffusion-cache", "diffusion_cache", str, "none, block, prefix or dual (see the README)"),
)
SAMPLER_FLAGS = (
    ("--logits-eos-inf", "logits_eos_inf", "never predict EOS (official option)"),
    ("--confidence-eos-eot-inf", "confidence_eos_eot_inf", "commit EOS/EoT tokens last (official option)"),
    ("--eos-early-stop", "eos_early_stop", "stop once the answer is complete up to an EOS"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llada-hf", description="Generate with, or chat with, a masked-diffusion LLaDA model."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,chat}")
    common = argparse.ArgumentParser(add_help=False)
    model = common.add_argument_group("model")
    model.add_argument("--model", default=BUNDLED_MODEL_PATH, help="local folder or Hub id (default: bundled model)")
    model.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: cuda if available)")
    model.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="weights dtype (default: saved)")
    model.add_argument("--load-in-4bit", action="store_true", help="quantize the weights to 4 bits (bitsandbytes)")
    model.add_argument("--system", default=None, help="system prompt (chat template)")
    model.add_argument("--no-chat-template", action="store_true", help="feed the text as is (base models)")
    sampler = common.add_argument_group("sampler (default: the model's generation_config.json)")
    for flag, _, kind, help_text in SAMPLER_OPTIONS:
        sampler.add_argument(flag, type=kind, default=None, help=help_text)
    for flag, _, help_text in SAMPLER_FLAGS:
        sampler.add_argument(flag, action="store_true", default=None, help=help_text)
    sampler.add_argument("--seed", type=int, default=None, help="random seed (sampling, random remasking)")
    display = common.add_argument_group("display")
    display.add_argument(
        "--drafts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show the denoising drafts (default: when stdout is a terminal)",
    )
    display.add_argument("--progress", action="store_true", help="show a progress bar over the denoising steps")

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
    sampler_kwargs = _sampler_kwargs(args)
    _check_sampler_options(parser, sampler_kwargs)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    model, tokenizer = load(parser, args)
    session = ChatSession(model, tokenizer, args, sampler_kwargs)
    if args.command == "generate":
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        session.answer(prompt)
        return 0
    return session.loop(sys.stdin, interactive=sys.stdin.isatty())


def _sampler_kwargs(args: argparse.Namespace) -> dict:
    names = [name for _, name, _, _ in SAMPLER_OPTIONS] + [name for _, name, _ in SAMPLER_FLAGS]
    kwargs = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if "gen_length" in kwargs and "max_new_tokens" in kwargs:
        kwargs.pop("max_new_tokens")  # the official name wins, as in `generate()`
    if args.progress:
        kwargs["show_progress"] = True
    if kwargs.get("temperature", 0) > 0:
        kwargs["do_sample"] = True
    return kwargs


def _check_sampler_options(parser: argparse.ArgumentParser, kwargs: dict) -> None:
    """Rejects bad sampler options before the (possibly long) model load, as argparse errors (exit code 2)."""
    try:
        DiffusionGenerationConfig(**kwargs).validate()
    except (ValueError, TypeError) as error:
        parser.error(_as_option_names(str(error)))
    block_length, gen_length = kwargs.get("block_length"), kwargs.get("gen_length")
    if gen_length is not None and gen_length < 1:
        parser.error(f"--gen-length must be >= 1, got {gen_length}.")
    if gen_length is not None and block_length is not None and gen_length % block_length:
        parser.error(f"--gen-length ({gen_length}) must be a multiple of --block-length ({block_length}).")


def _as_option_names(message: str) -> str:
    """`max_new_tokens` -> `--max-new-tokens` in error messages."""
    return re.sub(r"`(\w+)`", lambda match: "--" + match.group(1).replace("_", "-"), message)


def load(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """`(model, tokenizer)` from `args.model` (local folder or Hub id); exits with a usage error if not found."""
    location = args.model
    local = Path(location).expanduser()
    if not local.is_dir() and (local.exists() or not HUB_REPO_ID.match(location)):
        parser.error(f"--model {location!r}: no such model folder (give a local folder with config.json or a Hub id).")
    if local.is_dir():
        location = str(local)
        if not (local / "config.json").is_file():
            parser.error(f"--model {location!r}: the folder has no config.json.")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_kwargs = {"dtype": "auto" if args.dtype == "auto" else DTYPES[args.dtype]}
    if args.load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute_dtype = DTYPES.get(args.dtype, torch.bfloat16)
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype)
        model_kwargs.update(quantization_config=quantization, device_map=device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, **model_kwargs)
    except OSError as error:
        parser.error(f"--model {location!r}: cannot load it ({error}).")
    except ImportError as error:  # e.g. --load-in-4bit without bitsandbytes
        parser.error(str(error))
    if not args.load_in_4bit:
        model.to(device)
    return model.eval(), tokenizer


class ChatSession:
    """Formats messages with the chat template, generates, and prints answers (with drafts on a terminal)."""

    def __init__(self, model, tokenizer, args: argparse.Namespace, sampler_kwargs: dict):
        self.model, self.tokenizer, self.sampler_kwargs = model, tokenizer, sampler_kwargs
        self.use_chat_template = tokenizer.chat_template is not None and not args.no_chat_template
        self.system = args.system
        self.keep_history = args.command == "chat" and not args.no_history
        self.show_drafts = sys.stdout.isatty() if args.drafts is None else args.drafts
        self.history: list[dict[str, str]] = []
        self.stop_ids = {tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
        self.stop_ids -= {tokenizer.unk_token_id, tokenizer.bos_token_id, None}

    def loop(self, stream, interactive: bool) -> int:
        """Answers every line of `stream` until EOF or `exit`/`quit`."""
        if interactive:
            print("Chatting with a diffusion model. Type `exit` or press Ctrl-D to quit.")
        while True:
            if interactive:
                print("> ", end="", flush=True)
            line = stream.readline()
            if not line or line.strip().lower() in EXIT_COMMANDS:
                return 0
            if line.strip():
                self.answer(line.strip())

    def answer(self, text: str) -> str:
        input_ids = self._prompt_ids(text).to(self.model.device)
        streamer = self._streamer()
        sequences = self.model.generate(input_ids, streamer=streamer, **self.sampler_kwargs)
        answer = self._decode(sequences[0, input_ids.shape[1] :])
        if streamer is None:
            print(answer, flush=True)
        if self.keep_history:
            self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        return answer

    def _prompt_ids(self, text: str) -> torch.Tensor:
        if not self.use_chat_template:
            return self.tokenizer(text, return_tensors="pt").input_ids
        system = [{"role": "system", "content": self.system}] if self.system else []
        history = list(self.history)
        while True:
            messages = system + history + [{"role": "user", "content": text}]
            input_ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
            input_ids = input_ids["input_ids"] if not torch.is_tensor(input_ids) else input_ids
            if not history or input_ids.shape[1] + self._answer_length() <= self._max_length():
                return input_ids
            history = history[2:]  # drop the oldest exchange to fit the model's context

    def _answer_length(self) -> int:
        kwargs, config = self.sampler_kwargs, self.model.generation_config
        return kwargs.get("gen_length") or kwargs.get("max_new_tokens") or config.max_new_tokens

    def _max_length(self) -> int:
        return getattr(self.model.config, "max_position_embeddings", None) or sys.maxsize

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

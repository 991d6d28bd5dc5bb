"""A multi-turn chat with a diffusion model, showing the denoising drafts with `TextDiffusionStreamer`.

Each answer is printed as it is denoised: the draft (yellow) is redrawn after every step, and tokens are printed for
good once they are final. By default a scripted conversation is played; `--interactive` reads your messages from
stdin (the `llada-hf chat` command does the same with more options).

    python examples/chat.py
    python examples/chat.py --interactive
    python examples/chat.py --model GSAI-ML/LLaDA-8B-Instruct --device cuda --max-new-tokens 128
    LLADA_HF_SMOKE=1 python examples/chat.py   # one message
"""

import argparse
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextDiffusionStreamer

import llada_hf


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
SCRIPT = ["Sort: 8 3 5 1", "Sort: 4 0 9", "Sort: 2 7 1 8 2 8"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=llada_hf.BUNDLED_MODEL_PATH)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's generation config")
    parser.add_argument("--interactive", action="store_true", help="read messages from stdin until EOF or `exit`")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto").to(args.device).eval()
    streamer = TextDiffusionStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    length = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    messages = (line.strip() for line in sys.stdin) if args.interactive else iter(SCRIPT[:1] if SMOKE else SCRIPT)

    for message in messages:
        if message in ("exit", "quit"):
            break
        print(f"> {message}")
        # The bundled model was trained on single-turn chats: each message is its own conversation. Released chat
        # models can keep the history (append the user and assistant messages to `chat`).
        chat = [{"role": "user", "content": message}]
        inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        model.generate(**inputs.to(args.device), streamer=streamer, **length)


if __name__ == "__main__":
    main()

"""Diffusion generation with `model.generate()`: batched chat prompts, official sampler names, denoising history.

Loads the tiny LLaDA bundled with the package (or `--model`, a local folder or Hub id such as
`GSAI-ML/LLaDA-8B-Instruct`), answers a batch of left-padded chat prompts with the official LLaDA arguments
(`gen_length`, `steps`, `block_length`, `remasking`), and shows how the answer of the first prompt was denoised step
by step (`return_dict_in_generate=True, output_history=True`).

    python examples/generate.py
    python examples/generate.py --model GSAI-ML/LLaDA-8B-Instruct --device cuda --gen-length 128 --steps 128
    LLADA_HF_SMOKE=1 python examples/generate.py   # one prompt
"""

import argparse
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import llada_hf


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
PROMPTS = ["Sort: 9 4 7 1 3", "Sort: 5 2 8", "Sort: 6 6 1 0 9 3"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=llada_hf.BUNDLED_MODEL_PATH)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gen-length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--block-length", type=int, default=2)
    args = parser.parse_args()
    prompts = PROMPTS[:1] if SMOKE else PROMPTS

    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto").to(args.device).eval()
    chats = [[{"role": "user", "content": prompt}] for prompt in prompts]
    inputs = tokenizer.apply_chat_template(
        chats, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    ).to(args.device)

    output = model.generate(
        **inputs,
        gen_length=args.gen_length,  # the official names keep their official meaning
        steps=args.steps,
        block_length=args.block_length,
        remasking="low_confidence",
        temperature=0.0,
        return_dict_in_generate=True,
        output_history=True,
    )
    prompt_length = inputs["input_ids"].shape[1]
    answers = tokenizer.batch_decode(output.sequences[:, prompt_length:], skip_special_tokens=True)
    for prompt, answer in zip(prompts, answers):
        print(f"{prompt!r} -> {answer.strip()!r}")
    print(f"{output.nfe} forward passes for {len(prompts)} prompts")

    print("Denoising of the first answer (one line per step, _ = still masked):")
    for step, canvas in enumerate(output.history, start=1):
        words = [
            "_" if token == model.config.mask_token_id else tokenizer.decode([token], skip_special_tokens=True)
            for token in canvas[0, prompt_length:].tolist()
        ]
        print(f"{step:>3} {''.join(words)}")


if __name__ == "__main__":
    main()

"""`pipeline("text-generation")` with a diffusion model: chat messages in, answers out, batched.

The pipeline calls our `generate()` unchanged; the sampler settings come from the model's generation config and can
be overridden per call with the same names as `generate()` (`steps`, `block_length`, `remasking`, ...).

    python examples/pipeline.py
    python examples/pipeline.py --model GSAI-ML/LLaDA-8B-Instruct --device cuda
    LLADA_HF_SMOKE=1 python examples/pipeline.py   # two prompts
"""

import argparse
import os

import torch
from transformers import pipeline

import llada_hf


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
PROMPTS = ["Sort: 6 2 8 4 1", "Sort: 3 9 1", "Sort: 7 7 2 5", "Sort: 0 8 6 4 2 9"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=llada_hf.BUNDLED_MODEL_PATH)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    prompts = PROMPTS[:2] if SMOKE else PROMPTS

    generator = pipeline("text-generation", model=args.model, device=args.device)
    generator.tokenizer.padding_side = "left"  # batched diffusion prompts are left-padded
    chats = [[{"role": "user", "content": prompt}] for prompt in prompts]
    # Sampler settings from the model's generation config; any of them can be overridden here (steps=, block_length=).
    outputs = generator(chats, max_new_tokens=16, batch_size=len(chats))
    for prompt, output in zip(prompts, outputs):
        print(f"{prompt!r} -> {output[0]['generated_text'][-1]['content']!r}")


if __name__ == "__main__":
    main()

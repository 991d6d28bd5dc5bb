"""Load a LLaDA model in 4-bit (bitsandbytes nf4, double quantization) and generate, with no extra arguments.

    pip install "llada_hf[quant]"
    python examples/quantized_4bit.py --model GSAI-ML/LLaDA-8B-Instruct --prompt "What is 7 * 8?"
    python examples/quantized_4bit.py --model inclusionAI/LLaDA2.0-mini --prompt "What is 7 * 8?"
    LLADA_HF_SMOKE=1 python examples/quantized_4bit.py     # a tiny random LLaDA2, on CPU: checks the script runs

What it shows: `BitsAndBytesConfig(load_in_4bit=True, ...)` is all a user passes. The model classes keep the LM head
and LLaDA2.0's router (`gate.weight`, `expert_bias`) out of quantization, norms are not linear layers, and LLaDA2.0's
routed experts are built as per-expert linear layers so that they are quantized too (fused, they would stay in
bf16). The script prints the memory footprint, the parameters by kind, and the generated answer.

Without a bitsandbytes backend (not installed, or no CUDA and no CPU kernels) it prints why and exits cleanly.
Quantize from the original checkpoint on each load: a saved 4-bit LLaDA2.0 does not reload in transformers 5.24
(see `llada_hf.integrations.quantization`).
"""

import argparse
import os
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM
from llada_hf.integrations.quantization import count_parameters_by_kind


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"


def bitsandbytes_unavailable() -> str | None:
    """Why 4-bit bitsandbytes layers cannot run here, or None when they can."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return "bitsandbytes is not installed (`pip install llada_hf[quant]`)"
    try:
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type="nf4")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        layer.to(device)(torch.randn(1, 64, device=device))
    except Exception as error:
        return f"bitsandbytes {bnb.__version__} cannot run 4-bit layers here: {type(error).__name__}: {error}"
    return None


def write_tiny_llada2(path: str) -> str:
    """A tiny random LLaDA2.0 checkpoint (hidden sizes a multiple of bitsandbytes' CPU block size, 64)."""
    torch.manual_seed(0)
    config = LLaDA2MoeConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8, num_experts_per_tok=2, n_group=2,
        topk_group=1, first_k_dense_replace=1, max_position_embeddings=128, mask_token_id=127, eos_token_id=126,
        pad_token_id=126,
    )  # fmt: skip
    LLaDA2MoeModelLM(config).save_pretrained(path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=not SMOKE, help="Checkpoint folder or Hub id.")
    parser.add_argument("--prompt", default="What is 7 * 8?")
    parser.add_argument("--max-new-tokens", type=int, default=8 if SMOKE else 64)
    parser.add_argument("--block-length", type=int, default=8 if SMOKE else 32)
    parser.add_argument("--steps", type=int, default=8 if SMOKE else 32, help="Official meaning for each family.")
    args = parser.parse_args()

    reason = bitsandbytes_unavailable()
    if reason is not None:
        print(f"Skipping: {reason}.")
        return

    compute_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    quantization_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = args.model or write_tiny_llada2(scratch)
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=quantization_config, dtype=compute_dtype, device_map="auto"
        )
        with torch.device("meta"):
            census = count_parameters_by_kind(type(model)(model.config))
        print(f"memory footprint: {model.get_memory_footprint() / 2**20:.1f} MiB")
        print("parameters by kind: " + ", ".join(f"{kind} {count / 1e6:.2f}M" for kind, count in census.items()))

        if args.model is None:
            tokenizer = None
            input_ids = torch.randint(0, 126, (1, 8), generator=torch.Generator().manual_seed(0))
        else:
            tokenizer = AutoTokenizer.from_pretrained(args.model)
            messages = [{"role": "user", "content": args.prompt}]
            input_ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
        output = model.generate(
            input_ids.to(model.device),
            max_new_tokens=args.max_new_tokens,
            block_length=args.block_length,
            steps=args.steps,
            temperature=0.0,
        )
        answer = output[0, input_ids.shape[1] :]
        print("answer:", tokenizer.decode(answer, skip_special_tokens=True) if tokenizer else answer.tolist())


if __name__ == "__main__":
    main()

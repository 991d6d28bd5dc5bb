"""End to end with the stock `transformers.Trainer`: a tiny LLaDA trained from scratch by SFT learns to sort digits
(checked through `generate()`), and a 2-process CPU run of `examples/pretrain.py` under `accelerate launch`."""

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments

from llada_hf import LLaDAConfig, LLaDAModelLM
from llada_hf.training import DataCollatorForDiffusionSFT

from toy_tasks import (
    ANSWER_LENGTH,
    PROMPT_LENGTH,
    char_tokenizer,
    sorting_answer,
    sorting_feature,
    sorting_problems,
    sorting_prompt,
)


REPO = Path(__file__).resolve().parents[1]


class PromptCheckingCollator:
    """Wraps the SFT collator used for training and asserts, on every batch it hands the Trainer, that the prompt is
    intact: never masked, never supervised."""

    def __init__(self, collator: DataCollatorForDiffusionSFT):
        self.collator = collator
        self.batches = 0

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        clean_prompts = torch.tensor([feature["input_ids"][:PROMPT_LENGTH] for feature in features])
        assert torch.equal(batch["input_ids"][:, :PROMPT_LENGTH], clean_prompts)
        assert bool((batch["labels"][:, :PROMPT_LENGTH] == -100).all())
        assert bool((batch["input_ids"][:, PROMPT_LENGTH:] == self.collator.mask_token_id).any())
        self.batches += 1
        return batch


@pytest.mark.slow
def test_tiny_llada_trained_from_scratch_with_the_trainer_sorts_digits(tmp_path, one_thread):
    tokenizer = char_tokenizer()
    held_out = sorting_problems(256, seed=1)
    train = sorting_problems(4000, seed=0, exclude=frozenset(held_out))
    torch.manual_seed(0)
    config = LLaDAConfig(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=len(tokenizer),
        embedding_size=len(tokenizer), max_sequence_length=PROMPT_LENGTH + ANSWER_LENGTH,
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LLaDAModelLM(config)
    collator = PromptCheckingCollator(
        DataCollatorForDiffusionSFT(mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id)
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=64, max_steps=1000, learning_rate=3e-3,
        warmup_steps=50, lr_scheduler_type="cosine", weight_decay=0.0, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
    )  # fmt: skip
    Trainer(
        model=model, args=args, train_dataset=[sorting_feature(tokenizer, d) for d in train], data_collator=collator
    ).train()
    assert collator.batches >= 1000  # the Trainer may fetch one batch ahead

    model.eval()
    prompts = torch.tensor([tokenizer(sorting_prompt(digits))["input_ids"] for digits in held_out])
    with torch.no_grad():
        output = model.generate(
            prompts, max_new_tokens=ANSWER_LENGTH, steps=ANSWER_LENGTH, block_length=ANSWER_LENGTH, temperature=0.0
        )
    assert torch.equal(output[:, :PROMPT_LENGTH], prompts)
    answers = [tokenizer.decode(row[PROMPT_LENGTH:], skip_special_tokens=True) for row in output]
    exact = sum(answer == sorting_answer(digits) for answer, digits in zip(answers, held_out)) / len(held_out)
    assert exact >= 0.9, f"exact match {exact:.3f}; first answers {answers[:5]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_trains_on_two_cpu_processes(tmp_path):
    # `accelerate launch --cpu` starts a single process unless MPI is configured; `--multi_gpu` without a GPU starts
    # torchrun workers that the Trainer runs on CPU over gloo.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), str(REPO / "examples" / "pretrain.py"),
        "--output-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "LLADA_HF_SMOKE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    # Both processes print to the same pipe, so their lines may interleave.
    summaries = sorted(map(json.loads, re.findall(r'\{"rank": .*?\}', result.stdout)), key=lambda s: s["rank"])
    ranks = [(s["rank"], s["world_size"], s["steps"]) for s in summaries]
    assert ranks == [(0, 2, 20), (1, 2, 20)], result.stdout[-4000:]
    assert all(math.isfinite(s["train_loss"]) and s["train_loss"] > 0 for s in summaries)
    assert summaries[0]["checksum"] == summaries[1]["checksum"]  # gradients were averaged: the replicas agree
    assert (tmp_path / "run" / "model.safetensors").exists() and (tmp_path / "run" / "config.json").exists()

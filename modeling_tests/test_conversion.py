"""Llama -> LLaDA conversion (exact weight mapping, GQA, tied/untied, added mask token) and the WSD block-size
schedule."""

import importlib.util
import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from llada_hf import LLaDAModelLM
from llada_hf.conversion import convert_llama_to_llada
from llada_hf.training import DataCollatorForBlockDiffusion
from llada_hf.training.schedules import BlockSizeSchedule, BlockSizeScheduleCallback
from reversal_task import build_tokenizer, reversal_example, tiny_llada


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "convert_ar_to_diffusion.py"


def tiny_llama(tie_word_embeddings: bool, vocab_size: int = 20, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=vocab_size, max_position_embeddings=64, tie_word_embeddings=tie_word_embeddings, eos_token_id=1,
        bos_token_id=None, pad_token_id=None, rope_theta=10000.0, rms_norm_eps=1e-6, **overrides,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms, so that a swapped norm weight would show
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    return model


def causal_mask(batch_size: int, length: int) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool).tril()[None, None].expand(batch_size, 1, length, length)


@pytest.mark.parametrize("tie_word_embeddings", [False, True])
def test_converted_llama_under_a_causal_mask_computes_the_llama(tmp_path, tie_word_embeddings):
    llama = tiny_llama(tie_word_embeddings)
    llama.save_pretrained(tmp_path)
    model, tokenizer = convert_llama_to_llada(tmp_path, mask_token_id=19)
    model.eval()
    assert tokenizer is None and isinstance(model, LLaDAModelLM)
    assert (model.config.n_heads, model.config.n_kv_heads, model.config.weight_tying) == (4, 2, tie_word_embeddings)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie_word_embeddings

    input_ids = torch.randint(0, 19, (2, 11))
    with torch.no_grad():
        expected = llama(input_ids, output_hidden_states=True)
        # Llama's logits at i predict token i + 1 and LLaDA's predict token i, but both are lm_head(h_i): with the same
        # weights and a causal mask the hidden states, hence the logits, are the same numbers
        converted = model(input_ids, attention_mask=causal_mask(2, 11), output_hidden_states=True)
        bidirectional = model(input_ids).logits
    for ours, theirs in zip(converted.hidden_states, expected.hidden_states):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(converted.logits, expected.logits, rtol=0, atol=1e-6)
    assert not torch.allclose(bidirectional, expected.logits, atol=1e-2)  # the converted model attends both ways


def test_a_mask_token_is_added_to_the_tokenizer_and_the_vocabulary(tmp_path):
    vocab = {str(digit): digit for digit in range(10)} | {"<eos>": 10}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    llama = tiny_llama(tie_word_embeddings=False, vocab_size=11)
    llama.save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")

    model, converted_tokenizer = convert_llama_to_llada(tmp_path / "llama", tokenizer=tmp_path / "llama")
    assert converted_tokenizer.mask_token_id == 11 and len(converted_tokenizer) == 12
    assert model.config.mask_token_id == 11 and model.config.vocab_size == 12
    embeddings = model.get_input_embeddings().weight
    torch.testing.assert_close(embeddings[11], llama.get_input_embeddings().weight.mean(dim=0))
    torch.testing.assert_close(embeddings[:11], llama.get_input_embeddings().weight, rtol=0, atol=0)

    # saved in the released LLaDA format and loaded back through the Auto classes, it still computes the Llama
    model.save_pretrained(tmp_path / "llada")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "llada").eval()
    input_ids = torch.randint(0, 11, (1, 9))
    with torch.no_grad():
        logits = reloaded(input_ids, attention_mask=causal_mask(1, 9)).logits
        torch.testing.assert_close(logits[..., :11], llama(input_ids).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(attention_bias=True), "attention_bias"),
        (dict(head_dim=8), "head_dim"),
        (dict(hidden_act="gelu"), "hidden_act"),
    ],
)
def test_llama_options_llada_does_not_compute_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        convert_llama_to_llada(tiny_llama(tie_word_embeddings=False, **overrides), mask_token_id=19)


def test_a_mask_token_is_required():
    with pytest.raises(ValueError, match="mask_token_id"):
        convert_llama_to_llada(tiny_llama(tie_word_embeddings=False))
    with pytest.raises(ValueError, match="mask_token_id"):
        convert_llama_to_llada(tiny_llama(tie_word_embeddings=False), mask_token_id=20)


def test_warmup_stable_decay_schedule():
    schedule = BlockSizeSchedule.warmup_stable_decay(
        sequence_length=64, warmup_sizes=(1, 4, 32, 64), steps_per_warmup_stage=2, stable_steps=3,
        decay_sizes=(32, 8), steps_per_decay_stage=2,
    )  # fmt: skip
    assert schedule.stages == [(1, 2), (4, 2), (32, 2), (64, 3), (32, 2), (8, None)]  # 64 is the whole row already
    assert [schedule(step) for step in range(15)] == [1, 1, 4, 4, 32, 32, 64, 64, 64, 32, 32, 8, 8, 8, 8]
    assert BlockSizeSchedule([(1, 2), (None, 1)])(5) is None  # the last stage lasts
    with pytest.raises(ValueError, match=r"stages\[0\]"):
        BlockSizeSchedule([(0, 2)])
    with pytest.raises(ValueError, match=r"stages\[0\]"):
        BlockSizeSchedule([(1, None), (4, 2)])
    with pytest.raises(ValueError, match="step"):
        schedule(-1)


def test_callback_sets_the_block_size_of_every_step(tmp_path):
    """Two epochs, gradient accumulation 2: every forward of optimizer step s trains with block size schedule(s)."""
    tokenizer = build_tokenizer()
    model = tiny_llada(tokenizer)
    schedule = BlockSizeSchedule.warmup_stable_decay(
        sequence_length=10, warmup_sizes=(1, 4, 8), steps_per_warmup_stage=2, stable_steps=2, decay_sizes=(8, 4),
        steps_per_decay_stage=1,
    )  # fmt: skip
    expected = [1, 1, 4, 4, 8, 8, 10, 10, 8, 4]
    assert [schedule(step) for step in range(10)] == expected

    collator = DataCollatorForBlockDiffusion(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id, seed=0
    )
    scheduled = BlockSizeScheduleCallback(collator, schedule)
    forward_block_sizes = []

    def record_block_size(module, args, kwargs):
        mask = kwargs["attention_mask"]  # [noisy; clean] block-diffusion mask: a noisy query sees its own block
        forward_block_sizes.append(int(mask[0, 0, 0, : mask.shape[-1] // 2].sum()))

    model.register_forward_pre_hook(record_block_size, with_kwargs=True)
    rng = random.Random(0)
    features = []
    for _ in range(40):  # 5 optimizer steps of 2 x 4 rows per epoch
        prompt, answer = reversal_example(rng)
        prompt_ids, answer_ids = tokenizer.encode(prompt), tokenizer.encode(answer) + [tokenizer.eos_token_id]
        features.append({"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids})
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=2,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=scheduled, callbacks=[scheduled])
    trainer.train()

    assert forward_block_sizes == [size for size in expected for _ in range(2)]
    logged = [log["block_size"] for log in trainer.state.log_history if "loss" in log]
    assert logged == expected


def test_callback_must_also_be_the_collator(tmp_path):
    tokenizer = build_tokenizer()
    collator = DataCollatorForBlockDiffusion(
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id
    )
    scheduled = BlockSizeScheduleCallback(collator, BlockSizeSchedule([(1, None)]))
    prompt, answer = reversal_example(random.Random(0))
    features = [{"input_ids": tokenizer.encode(f"{prompt} {answer}")}] * 4
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, report_to=[], use_cpu=True,
        save_strategy="no",
    )  # fmt: skip
    trainer = Trainer(model=tiny_llada(tokenizer), args=args, train_dataset=features, data_collator=collator,
                        callbacks=[scheduled])  # fmt: skip
    with pytest.raises(RuntimeError, match="data_collator"):
        trainer.train()
    with pytest.raises(TypeError, match="block_size"):
        BlockSizeScheduleCallback(lambda features: features, BlockSizeSchedule([(1, None)]))


@pytest.mark.slow
def test_trained_causal_lm_becomes_a_working_diffusion_model(tmp_path, one_thread):
    """examples/convert_ar_to_diffusion.py at full size: Llama trained on digit reversal, converted, WSD-trained."""
    spec = importlib.util.spec_from_file_location("convert_ar_to_diffusion", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    report = example.run(tmp_path, ar_steps=300, diffusion_steps=400, num_prompts=200)
    accuracy = report["exact_match"]
    assert accuracy["llama (greedy, causal)"] >= 0.9
    assert accuracy["converted, before diffusion training"] < 0.5  # conversion alone is not a diffusion model
    assert accuracy["after block-diffusion training"] >= 0.9, accuracy
    assert report["block_sizes"] == [1] * 50 + [2] * 50 + [5] * 50 + [10] * 100 + [5] * 150

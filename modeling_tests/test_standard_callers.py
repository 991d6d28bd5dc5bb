"""generate() as standard callers use it (transformers' dialect), and the line between the two dialects.

Transformers' dialect: no official keyword (`gen_length`, `steps`, `mask_id`, `eos_id`) in the call. `max_new_tokens`
is an upper bound, the answer grows a canvas (LLaDA 1.x) or a block (LLaDA2) at a time and ends at its first EOS or stop
string, and every standard flag is honoured or refused by name.
"""

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    StoppingCriteria,
    pipeline,
)

import llada_hf
from streaming import RecordingStreamer
from llada_hf.generation.configuration_diffusion import UNSUPPORTED_STANDARD_FIELDS


FIXTURES = Path(__file__).parent / "fixtures"
MASK, EOS = 126, 125  # tiny random LLaDA
LLADA2_MASK, LLADA2_EOS = 127, 124  # tiny random LLaDA2 (its config has no mask id)


class NoEos(LogitsProcessor):
    """Keeps a random model from ending its answer, so that answers reach the cap."""

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[..., EOS] = -float("inf")
        return scores


class EosAt(LogitsProcessor):
    """Makes answer column `column` (of the first canvas) an EOS with certainty."""

    def __init__(self, prompt_length: int, column: int):
        self.position = prompt_length + column

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[..., EOS] = -float("inf")
        if scores.shape[1] > self.position:
            scores[:, self.position, :] = -float("inf")
            scores[:, self.position, EOS] = 0.0
        return scores


@pytest.fixture(scope="module")
def bundled():
    tokenizer = AutoTokenizer.from_pretrained(llada_hf.BUNDLED_MODEL_PATH, padding_side="left")
    return AutoModelForCausalLM.from_pretrained(llada_hf.BUNDLED_MODEL_PATH), tokenizer


def prompt_of(length, seed, batch=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 120, (batch, length), generator=generator)


def chat_ids(tokenizer, text="Sort: 9 4 7 1 3"):
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)


# ---------------------------------------------------------------------------------------------------------------------
# Lengths: canvases, EOS, the cap
# ---------------------------------------------------------------------------------------------------------------------


def test_answer_grows_a_canvas_at_a_time(llada):
    prompt = prompt_of(5, seed=0)
    sampler = {"canvas_length": 4, "block_length": 2, "logits_processor": [NoEos()]}
    out = llada.generate(prompt, max_new_tokens=12, return_dict_in_generate=True, **sampler)
    assert out.sequences.shape == (1, 5 + 12) and out.nfe == 12  # 3 canvases of 4 tokens, one token per step
    # Each canvas is the official sampler's answer to the prompt and the answer so far.
    expected = prompt
    for _ in range(3):
        expected = llada.generate(expected, gen_length=4, steps=4, block_length=2, logits_processor=[NoEos()])
    assert torch.equal(out.sequences, expected)


def test_answer_ends_at_its_first_eos(llada):
    prompt = prompt_of(5, seed=1)
    out = llada.generate(prompt, max_new_tokens=64, canvas_length=8, block_length=2, logits_processor=[EosAt(5, 3)])
    assert out.shape == (1, 5 + 4) and out[0, -1] == EOS  # cut after the EOS: batch of one
    official = llada.generate(prompt, gen_length=8, steps=8, block_length=2, logits_processor=[EosAt(5, 3)])
    assert torch.equal(out[0], official[0, :9])  # same tokens as the official sampler up to the EOS


def test_batch_rows_end_at_their_eos_and_are_padded(llada):
    prompts = prompt_of(5, seed=2, batch=2)

    class FirstRowEos(EosAt):
        def __call__(self, input_ids, scores):
            first = super().__call__(input_ids[:1], scores[:1])  # the second row never ends
            return torch.cat([first, NoEos()(input_ids[1:], scores[1:])])

    out = llada.generate(
        prompts, max_new_tokens=12, canvas_length=4, block_length=2, logits_processor=[FirstRowEos(5, 1)]
    )
    assert out.shape == (2, 5 + 12)
    assert out[0, 6] == EOS and (out[0, 7:] == llada.generation_config.pad_token_id).all()
    assert (out[1, 5:] != EOS).all()


def test_max_new_tokens_above_the_positions_is_capped(llada):
    prompt = prompt_of(5, seed=3)
    out = llada.generate(prompt, max_new_tokens=1024, canvas_length=64, block_length=32, logits_processor=[NoEos()])
    # Canvases of 64 while they fit, then whole blocks of 32: 5 + 3 * 64 + 32 of the model's 256 positions.
    assert out.shape[1] == 5 + 3 * 64 + 32


def test_llada2_transformers_dialect_equals_official_until_eos(llada2):
    prompt = prompt_of(7, seed=4)
    sampler = {"block_length": 8, "threshold": 0.9, "mask_token_id": LLADA2_MASK}
    ours = llada2.generate(prompt, max_new_tokens=1024, **sampler)
    official = llada2.generate(prompt, gen_length=256 - 7, steps=8, **sampler)
    answer = official[0, 7:]
    end = int((answer == LLADA2_EOS).nonzero()[0]) + 1 if (answer == LLADA2_EOS).any() else answer.numel()
    assert torch.equal(ours[0], official[0, : 7 + end])


def test_official_keywords_keep_the_exact_length(llada):
    prompt = prompt_of(5, seed=5)
    out = llada.generate(prompt, max_new_tokens=7, steps=8, block_length=4, logits_processor=[EosAt(5, 1)])
    assert out.shape == (1, 5 + 7) and (out[0, 6:] == EOS).sum() >= 1  # not cut at the EOS


def test_steps_must_split_over_a_canvas(llada):
    with pytest.raises(ValueError, match="canvas_length"):
        llada.generate(
            prompt_of(4, seed=6), canvas_length=8, block_length=2, generation_config=GenerationConfig(steps=3)
        )


def test_max_length_of_a_generation_config_is_honoured(llada):
    prompt = prompt_of(5, seed=7)
    out = llada.generate(prompt, generation_config=GenerationConfig(max_length=9), logits_processor=[NoEos()])
    assert out.shape == (1, 9)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling flags
# ---------------------------------------------------------------------------------------------------------------------


def test_sampling_flags_mean_what_they_mean_in_transformers(llada):
    prompt = prompt_of(5, seed=8)
    kwargs = {"max_new_tokens": 8, "canvas_length": 8, "block_length": 8, "logits_processor": [NoEos()]}
    greedy = llada.generate(prompt, **kwargs)

    def draw(seed, **flags):
        return llada.generate(prompt, generator=torch.Generator().manual_seed(seed), **kwargs, **flags)

    assert torch.equal(draw(0, do_sample=False, temperature=1.0), greedy)
    assert torch.equal(draw(0, temperature=0.0), greedy)
    assert torch.equal(draw(0, do_sample=True, temperature=0.0), greedy)
    samples = [draw(seed, do_sample=True) for seed in range(4)]
    assert any(not torch.equal(sample, greedy) for sample in samples)
    assert torch.equal(draw(0, do_sample=True), draw(0, do_sample=True, temperature=1.0))  # unset means 1.0
    assert torch.equal(draw(1, temperature=0.7), draw(1, do_sample=True, temperature=0.7))  # no temperature ignored


def test_num_return_sequences(llada):
    prompts = prompt_of(5, seed=9, batch=2)
    out = llada.generate(
        prompts, max_new_tokens=4, canvas_length=4, block_length=4, num_return_sequences=3, logits_processor=[NoEos()]
    )
    assert out.shape == (6, 9)
    assert torch.equal(out[:3, :5], prompts[0].expand(3, -1)) and torch.equal(out[3:, :5], prompts[1].expand(3, -1))


def test_standard_processors_change_the_answer(llada):
    prompt = prompt_of(5, seed=10)
    kwargs = {"max_new_tokens": 8, "canvas_length": 8, "block_length": 8, "logits_processor": [NoEos()]}
    greedy = llada.generate(prompt, **kwargs)
    banned = int(greedy[0, 5])
    for flags in ({"bad_words_ids": [[banned]]}, {"suppress_tokens": [banned]}):
        out = llada.generate(prompt, **kwargs, **flags)
        assert not (out[0, 5:] == banned).any(), flags
    penalised = llada.generate(prompt, repetition_penalty=50.0, **kwargs)
    assert not torch.equal(penalised, greedy)


def test_every_generation_config_field_is_honoured_or_refused(llada):
    honoured = {
        # lengths and stopping
        "max_length", "max_new_tokens", "stop_strings", "eos_token_id", "pad_token_id", "bos_token_id",
        # sampling and processors
        "do_sample", "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
        "repetition_penalty", "bad_words_ids", "suppress_tokens", "sequence_bias", "remove_invalid_values",
        "renormalize_logits",
        # outputs and runtime
        "num_return_sequences", "return_dict_in_generate", "use_cache", "cache_implementation", "compile_config",
        "disable_compile",
        # metadata
        "transformers_version", "_from_model_config",
    }  # fmt: skip
    fields = set(GenerationConfig().to_dict())
    assert fields <= honoured | set(UNSUPPORTED_STANDARD_FIELDS), fields - honoured - set(UNSUPPORTED_STANDARD_FIELDS)
    assert not honoured & set(UNSUPPORTED_STANDARD_FIELDS)
    prompt = prompt_of(3, seed=11)
    for name, (off_values, _) in UNSUPPORTED_STANDARD_FIELDS.items():
        value = {bool: True, int: 3, float: 0.5}.get(type(off_values[0]) if off_values else int, 3)
        with pytest.raises(ValueError, match=f"`{name}="):
            llada.generate(prompt, max_new_tokens=4, **{name: value})


@pytest.mark.parametrize(
    "flags, match",
    [
        ({"bad_words_ids": [[3, 4]]}, "bad_words_ids"),
        ({"stop_strings": ["x"]}, "tokenizer"),
        ({"assistant_model": object()}, "assistant_model"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ],
)
def test_flags_without_a_diffusion_meaning_are_refused_by_name(llada, flags, match):
    with pytest.raises((ValueError, TypeError), match=match):
        llada.generate(prompt_of(3, seed=12), max_new_tokens=4, **flags)


# ---------------------------------------------------------------------------------------------------------------------
# Stop strings, stopping criteria, streaming (bundled model)
# ---------------------------------------------------------------------------------------------------------------------


def test_stop_strings_cut_the_answer_and_the_stream(bundled):
    model, tokenizer = bundled
    inputs = chat_ids(tokenizer)
    prompt_length = inputs["input_ids"].shape[1]
    full = model.generate(**inputs, max_new_tokens=64)
    assert tokenizer.decode(full[0, prompt_length:], skip_special_tokens=True) == "1 3 4 7 9"
    streamer = RecordingStreamer()
    out = model.generate(**inputs, max_new_tokens=64, stop_strings="7", tokenizer=tokenizer, streamer=streamer)
    assert tokenizer.decode(out[0, prompt_length:], skip_special_tokens=True) == "1 3 4 7"
    assert torch.equal(torch.cat(streamer.values[1:]), out[0, prompt_length:])


def test_stopping_criteria_cut_the_answer(bundled):
    model, tokenizer = bundled
    inputs = chat_ids(tokenizer)
    prompt_length = inputs["input_ids"].shape[1]

    class ThreeTokens(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= prompt_length + 3)

    out = model.generate(**inputs, max_new_tokens=64, stopping_criteria=[ThreeTokens()])
    assert out.shape[1] == prompt_length + 3


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 64}, {"gen_length": 16, "steps": 16, "block_length": 2}])
def test_stream_equals_the_returned_answer(bundled, kwargs):
    model, tokenizer = bundled
    inputs = chat_ids(tokenizer)
    streamer = RecordingStreamer()
    out = model.generate(**inputs, streamer=streamer, **kwargs)
    assert torch.equal(torch.cat(streamer.values[1:]), out[0, inputs["input_ids"].shape[1] :])


# ---------------------------------------------------------------------------------------------------------------------
# pipeline("text-generation") with its usual kwargs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, ["1 3 4 7 9"]),
        ({"max_new_tokens": 20}, ["1 3 4 7 9"]),
        ({"max_new_tokens": 1024}, ["1 3 4 7 9"]),
        ({"max_new_tokens": 3}, ["1 3 4"]),
        ({"stop_sequence": "7"}, ["1 3 4 7"]),
        ({"num_return_sequences": 2}, ["1 3 4 7 9"] * 2),
        ({"repetition_penalty": 1.2}, None),
        ({"do_sample": True, "num_return_sequences": 2}, None),
    ],
)
def test_pipeline_kwargs(bundled, kwargs, expected):
    model, tokenizer = bundled
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    outputs = generator([{"role": "user", "content": "Sort: 9 4 7 1 3"}], **kwargs)
    answers = [output["generated_text"][-1]["content"] for output in outputs]
    assert len(answers) == kwargs.get("num_return_sequences", 1)
    assert all(answer.strip() for answer in answers)
    if expected is not None:
        assert answers == expected


def test_pipeline_bad_words_ids_are_applied(bundled):
    model, tokenizer = bundled
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    one = tokenizer.convert_tokens_to_ids("1")
    output = generator([{"role": "user", "content": "Sort: 9 4 7 1 3"}], bad_words_ids=[[one]])
    assert "1" not in output[0]["generated_text"][-1]["content"]


def test_pipeline_refuses_unsupported_flags_by_name(bundled):
    model, tokenizer = bundled
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="num_beams"):
        generator([{"role": "user", "content": "Sort: 3 1"}], num_beams=2)


def test_progress_bar_follows_transformers_logging(llada, capfd):
    from transformers.utils import logging

    prompt = prompt_of(3, seed=13)
    llada.generate(prompt, max_new_tokens=4, canvas_length=4, block_length=4, show_progress=True)
    assert "denoising" in capfd.readouterr().err
    logging.disable_progress_bar()
    try:
        llada.generate(prompt, max_new_tokens=4, canvas_length=4, block_length=4, show_progress=True)
        assert "denoising" not in capfd.readouterr().err
    finally:
        logging.enable_progress_bar()

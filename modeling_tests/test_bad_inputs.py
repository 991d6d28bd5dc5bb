"""Bad input to `generate()` and the pipeline never gives a silent wrong answer: each case raises an exception whose
message names the argument, or keeps a documented invariant (streaming == result, padding untouched, batched == single
rows in float64, skipped idle steps change nothing)."""

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, LogitsProcessor, pipeline

import llada_hf
from streaming import RecordingStreamer


FIXTURES = Path(__file__).parent / "fixtures"
MASK, EOS, VOCAB = 126, 125, 128  # tiny random LLaDA
LLADA2_MASK, LLADA2_EOS = 127, 124  # tiny random LLaDA2 (no mask id in its config)
NAN, INF = float("nan"), float("inf")


def prompt_of(length, seed=0, batch=1):
    return torch.randint(0, 120, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------------
# Arguments: each raises a TypeError / ValueError naming the argument
# ---------------------------------------------------------------------------------------------------------------------

NUMBER_ARGUMENTS = ["temperature", "threshold", "cfg_scale", "factor", "entropy_bound", "top_p", "min_p",
                    "repetition_penalty", "editing_threshold", "typical_p", "epsilon_cutoff", "eta_cutoff"]  # fmt: skip
INTEGER_ARGUMENTS = ["steps", "block_length", "max_new_tokens", "gen_length", "canvas_length", "minimal_topk",
                     "max_post_steps", "num_return_sequences", "top_k", "mask_token_id"]  # fmt: skip

BAD_LLADA_ARGUMENTS = (
    [({name: NAN}, ValueError, name) for name in NUMBER_ARGUMENTS]
    + [({name: INF}, ValueError, name) for name in NUMBER_ARGUMENTS]
    + [({name: -INF}, ValueError, name) for name in NUMBER_ARGUMENTS]
    + [({name: "0.5"}, TypeError, name) for name in NUMBER_ARGUMENTS]
    + [({name: True}, TypeError, name) for name in NUMBER_ARGUMENTS]
    + [({name: 2.5}, TypeError, name) for name in INTEGER_ARGUMENTS]
    + [({name: "4"}, TypeError, name) for name in INTEGER_ARGUMENTS]
    + [({name: -1}, ValueError, name) for name in INTEGER_ARGUMENTS if name not in ("top_k", "mask_token_id")]
    + [
        ({"temperature": -0.5}, ValueError, "temperature"),
        ({"top_p": 0.0}, ValueError, "top_p"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"min_p": 1.5}, ValueError, "min_p"),
        ({"repetition_penalty": 0.0}, ValueError, "repetition_penalty"),
        ({"remasking": "lowest"}, ValueError, "remasking"),
        ({"parallel_decoding": "fast"}, ValueError, "parallel_decoding"),
        ({"parallel_decoding": "factor"}, ValueError, "factor"),
        ({"parallel_decoding": "entropy_bound"}, ValueError, "entropy_bound"),
        ({"parallel_decoding": "threshold"}, ValueError, "threshold"),
        ({"diffusion_cache": "kv"}, ValueError, "diffusion_cache"),
        ({"diffusion_cache": "block"}, ValueError, "diffusion_cache"),
        ({"block_schedule": "causal"}, ValueError, "block_schedule"),
        ({"cache_implementation": "static"}, ValueError, "cache_implementation"),
        ({"cache_implementation": "paged"}, ValueError, "cache_implementation"),
        ({"editing_threshold": 0.5}, ValueError, "editing_threshold"),
        ({"mask_token_id": 500}, ValueError, "mask_token_id"),
        ({"mask_id": 128}, ValueError, "mask_token_id"),
        ({"eos_token_id": 999}, ValueError, "eos_token_id"),
        ({"eos_id": -3}, ValueError, "eos_id"),
        ({"pad_token_id": 128}, ValueError, "pad_token_id"),
        ({"pad_token_id": MASK}, ValueError, "pad_token_id"),
        ({"eot_token_id": 1000}, ValueError, "eot_token_id"),
        ({"mask_id": 5, "mask_token_id": 6}, ValueError, "mask_id"),
        ({"gen_length": 6, "block_length": 4, "steps": 6}, ValueError, "block_length"),
        ({"gen_length": 8, "block_length": 4, "steps": 3}, ValueError, "steps"),
        ({"gen_length": 10**6, "steps": 10**6}, ValueError, "maximum sequence length"),
        ({"gen_length": 320, "block_length": 32, "steps": 320}, ValueError, "maximum sequence length"),
        ({"max_length": 3}, ValueError, "max_length"),
        ({"num_beams": 2}, ValueError, "num_beams"),
        ({"num_beam_groups": 2}, ValueError, "num_beam_groups"),
        ({"no_repeat_ngram_size": 2}, ValueError, "no_repeat_ngram_size"),
        ({"min_new_tokens": 3}, ValueError, "min_new_tokens"),
        ({"min_length": 3}, ValueError, "min_length"),
        ({"output_scores": True}, ValueError, "output_scores"),
        ({"output_logits": True}, ValueError, "output_logits"),
        ({"output_attentions": True}, ValueError, "output_attentions"),
        ({"guidance_scale": 2.0}, ValueError, "guidance_scale"),
        ({"penalty_alpha": 0.5}, ValueError, "penalty_alpha"),
        ({"max_time": 1.0}, ValueError, "max_time"),
        ({"forced_eos_token_id": 3}, ValueError, "forced_eos_token_id"),
        ({"bad_words_ids": [[1, 2]]}, ValueError, "bad_words_ids"),
        ({"sequence_bias": [[[1, 2], 1.0]]}, ValueError, "sequence_bias"),
        ({"stop_strings": ["x"]}, ValueError, "stop_strings"),
        ({"stop_strings": ""}, ValueError, "stop_strings"),
        ({"bad_words_ids": 99}, TypeError, "bad_words_ids"),
        ({"bad_words_ids": [[-1]]}, ValueError, "bad_words_ids"),
        ({"bad_words_ids": [[999]]}, ValueError, "bad_words_ids"),
        ({"suppress_tokens": [999]}, ValueError, "suppress_tokens"),
        ({"suppress_tokens": [-5]}, ValueError, "suppress_tokens"),
        ({"suppress_tokens": "3"}, TypeError, "suppress_tokens"),
        ({"sequence_bias": 3}, TypeError, "sequence_bias"),
        ({"steps_per_block": 4}, TypeError, "steps_per_block"),
        ({"assistant_model": "x"}, TypeError, "assistant_model"),
        ({"beams": 2}, TypeError, "beams"),
        ({"generation_config": "greedy"}, TypeError, "generation_config"),
        ({"streamer": object(), "num_return_sequences": 2}, ValueError, "streamer"),
        ({"remasking": "random", "steps": 64, "gen_length": 8, "block_length": 8}, ValueError, "steps"),
        ({"do_sample": True, "steps": 32, "gen_length": 8, "block_length": 8}, ValueError, "steps"),
    ]
)


@pytest.mark.parametrize("kwargs, error, name", BAD_LLADA_ARGUMENTS)
def test_bad_llada_arguments_name_themselves(llada, kwargs, error, name):
    length = {} if {"gen_length", "max_length", "max_new_tokens"} & kwargs.keys() else {"max_new_tokens": 8}
    with pytest.raises(error, match=name):
        llada.generate(prompt_of(4), **length, **kwargs)


BAD_LLADA2_ARGUMENTS = [
    ({"remasking": "random"}, ValueError, "remasking"),
    ({"block_schedule": "prompt"}, ValueError, "block_schedule"),
    ({"diffusion_cache": "dual"}, ValueError, "diffusion_cache"),
    ({"diffusion_cache": "prefix"}, ValueError, "diffusion_cache"),
    ({"block_length": 512}, ValueError, "block_length"),
    ({"gen_length": 512, "steps": 4}, ValueError, "maximum sequence length"),
    ({"threshold": NAN}, ValueError, "threshold"),
    ({"editing_threshold": INF}, ValueError, "editing_threshold"),
    ({"max_post_steps": -1}, ValueError, "max_post_steps"),
    ({"mask_token_id": 1000}, ValueError, "mask_token_id"),
    ({"minimal_topk": 0}, ValueError, "minimal_topk"),
    ({"minimal_topk": 100, "steps": 4}, ValueError, "minimal_topk"),
]


@pytest.mark.parametrize("kwargs, error, name", BAD_LLADA2_ARGUMENTS)
def test_bad_llada2_arguments_name_themselves(llada2, kwargs, error, name):
    with pytest.raises(error, match=name):
        llada2.generate(prompt_of(4), **{"max_new_tokens": 8, "mask_token_id": LLADA2_MASK, **kwargs})


def test_llada2_without_mask_id_says_so(llada2):
    with pytest.raises(ValueError, match="mask_token_id"):
        llada2.generate(prompt_of(4), max_new_tokens=8)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs: ids, shapes, padding, types
# ---------------------------------------------------------------------------------------------------------------------

BAD_INPUTS = [
    (lambda: torch.tensor([[1, 2, 128]]), None, ValueError, "input_ids"),
    (lambda: torch.tensor([[1, -2, 3]]), None, ValueError, "input_ids"),
    (lambda: torch.tensor([1, 2, 3]), None, TypeError, "input_ids"),
    (lambda: torch.tensor([[1.0, 2.0]]), None, TypeError, "input_ids"),
    (lambda: [[1, 2, 3]], None, TypeError, "input_ids"),
    (lambda: torch.ones(1, 2, 3, dtype=torch.long), None, TypeError, "input_ids"),
    (lambda: torch.tensor([[1, 2, 3]]), lambda: torch.tensor([[1, 1]]), ValueError, "attention_mask"),
    (lambda: torch.tensor([[1, 2, 3]]), lambda: torch.tensor([[1, 1, 0]]), ValueError, "left padding"),
    (lambda: torch.tensor([[1, 2, 3]]), lambda: torch.tensor([[0, 0, 0]]), ValueError, "attention_mask"),
    (lambda: torch.tensor([[1, 2, 3]]), lambda: torch.tensor([[2, 1, 1]]), ValueError, "attention_mask"),
    (lambda: torch.tensor([[1, 2, 3]]), lambda: "mask", TypeError, "attention_mask"),
    (lambda: torch.tensor([[1, 2, 3]]), lambda: [[0, 1]], ValueError, "attention_mask"),
]


@pytest.mark.parametrize("input_ids, attention_mask, error, name", BAD_INPUTS)
def test_bad_inputs_name_themselves(llada, input_ids, attention_mask, error, name):
    mask = attention_mask() if attention_mask else None
    with pytest.raises(error, match=name):
        llada.generate(input_ids(), attention_mask=mask, max_new_tokens=4)


def test_gen_length_wins_over_max_new_tokens(llada):
    out = llada.generate(prompt_of(3), gen_length=8, max_new_tokens=256, steps=8, block_length=4)
    assert out.shape == (1, 3 + 8)


def test_input_ids_and_inputs_together_are_refused(llada):
    with pytest.raises(ValueError, match="input_ids"):
        llada.generate(prompt_of(3), input_ids=prompt_of(3), max_new_tokens=4)


def test_attention_mask_list_and_generation_config_dict_are_accepted(llada):
    prompt = prompt_of(4, seed=1)
    reference = llada.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, canvas_length=4)
    as_list = llada.generate(prompt, attention_mask=[[1, 1, 1, 1]], max_new_tokens=4, canvas_length=4)
    as_dict = llada.generate(prompt, generation_config={"max_new_tokens": 4, "canvas_length": 4})
    assert torch.equal(as_list, reference) and torch.equal(as_dict, reference)


def test_nothing_the_caller_passes_is_mutated(llada):
    prompt = prompt_of(4, seed=2, batch=2)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    config = GenerationConfig(max_new_tokens=4)
    before = (prompt.clone(), mask.clone(), config.to_dict())
    llada.generate(prompt, attention_mask=mask, generation_config=config, canvas_length=4)
    assert torch.equal(prompt, before[0]) and torch.equal(mask, before[1]) and config.to_dict() == before[2]


def test_padding_that_uses_the_mask_id_is_never_denoised(llada):
    prompt = prompt_of(4, seed=3)
    padded = torch.cat([torch.full((1, 3), MASK), prompt], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    out = llada.generate(padded, attention_mask=mask, gen_length=4, steps=4, block_length=4)
    assert torch.equal(out[0, :3], torch.full((3,), MASK))  # returned as given
    alone = llada.generate(prompt, gen_length=4, steps=4, block_length=4)
    assert torch.equal(out[0, 3:], alone[0])


def test_non_finite_logits_are_refused(llada):
    class Broken(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores * NAN

    with pytest.raises(ValueError, match="NaN"):
        llada.generate(prompt_of(4), max_new_tokens=4, logits_processor=[Broken()])


# ---------------------------------------------------------------------------------------------------------------------
# Lengths and infilling
# ---------------------------------------------------------------------------------------------------------------------


def test_approximate_caches_accept_a_canvas_rounded_to_blocks(llada):
    for cache in ("prefix", "dual"):
        out = llada.generate(prompt_of(5, seed=4), max_new_tokens=15, steps=16, block_length=2, diffusion_cache=cache)
        assert out.shape == (1, 20)


def test_llada2_refuses_prompt_masks_it_could_not_fill(llada2):
    prompt = prompt_of(40, seed=5)
    prompt[0, 3] = LLADA2_MASK  # in the first block of 32, before the block holding the prompt's end
    with pytest.raises(ValueError, match="mask tokens"):
        llada2.generate(prompt, gen_length=8, steps=8, block_length=32, mask_token_id=LLADA2_MASK)


def test_llada_infills_prompt_masks(llada):
    prompt = prompt_of(6, seed=6)
    prompt[0, 1] = MASK
    out = llada.generate(prompt, gen_length=4, steps=4, block_length=4)
    assert not (out == MASK).any()


def test_transformers_dialect_stops_at_the_positions_without_error(llada, llada2):
    assert llada.generate(prompt_of(250, seed=7), max_new_tokens=1024, block_length=2).shape[1] <= 256
    out = llada2.generate(prompt_of(250, seed=7), max_new_tokens=1024, block_length=8, mask_token_id=LLADA2_MASK)
    assert out.shape[1] <= 256
    with pytest.raises(ValueError, match="prompt"):
        llada.generate(prompt_of(256, seed=7), max_new_tokens=4)
    with pytest.raises(ValueError, match="block_length"):
        llada.generate(prompt_of(250, seed=7), max_new_tokens=1024, block_length=32)


# ---------------------------------------------------------------------------------------------------------------------
# Wasted forward passes
# ---------------------------------------------------------------------------------------------------------------------


def test_idle_steps_are_skipped_and_tokens_stay_identical(llada):
    prompt = prompt_of(5, seed=8)
    exact = llada.generate(prompt, gen_length=16, steps=16, block_length=16, return_dict_in_generate=True)
    wasteful = llada.generate(prompt, gen_length=16, steps=64, block_length=16, return_dict_in_generate=True)
    assert torch.equal(exact.sequences, wasteful.sequences) and wasteful.nfe == exact.nfe == 16
    huge = llada.generate(prompt, gen_length=16, steps=10**7, block_length=16, return_dict_in_generate=True)
    assert torch.equal(huge.sequences, exact.sequences) and huge.nfe == 16


# ---------------------------------------------------------------------------------------------------------------------
# Invariants: streaming == result; batched == single rows (float64)
# ---------------------------------------------------------------------------------------------------------------------


STREAMING_MODES = [
    ("llada", {"gen_length": 16, "steps": 16, "block_length": 4}),
    ("llada", {"gen_length": 16, "steps": 16, "block_length": 4, "eos_early_stop": True}),
    ("llada", {"max_new_tokens": 32, "canvas_length": 8, "block_length": 4}),
    ("llada", {"gen_length": 16, "steps": 16, "block_length": 4, "diffusion_cache": "prefix"}),
    ("llada", {"gen_length": 16, "steps": 16, "block_length": 4, "diffusion_cache": "dual"}),
    ("llada", {"gen_length": 16, "block_length": 4, "parallel_decoding": "threshold", "threshold": 0.5}),
    ("llada", {"gen_length": 16, "block_length": 4, "parallel_decoding": "factor", "factor": 1.0}),
    ("llada", {"gen_length": 16, "block_length": 4, "parallel_decoding": "entropy_bound", "entropy_bound": 0.5}),
    ("llada2", {"gen_length": 32, "steps": 8, "block_length": 8}),
    ("llada2", {"max_new_tokens": 64, "block_length": 8}),
    ("llada2", {"gen_length": 32, "steps": 8, "block_length": 8, "diffusion_cache": "none"}),
    ("llada2", {"gen_length": 32, "steps": 8, "block_length": 8, "threshold": 2.0}),
    ("llada2", {"gen_length": 32, "block_length": 8, "parallel_decoding": "threshold", "threshold": 0.5}),
    ("llada2", {"gen_length": 32, "steps": 8, "block_length": 8, "editing_threshold": 0.5}),
]


class EosSoon(LogitsProcessor):
    """Makes EOS likely, so that answers end early and tokens after the EOS exist in the official dialect."""

    def __init__(self, eos):
        self.eos = eos

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[..., self.eos] += 3.0
        return scores


@pytest.mark.parametrize("family, kwargs", STREAMING_MODES)
def test_streamed_tokens_equal_the_returned_answer(llada, llada2, family, kwargs):
    model, eos = (llada, EOS) if family == "llada" else (llada2, LLADA2_EOS)
    extra = {"mask_token_id": LLADA2_MASK} if family == "llada2" else {}
    prompt = prompt_of(6, seed=9)
    streamer = RecordingStreamer()
    out = model.generate(prompt, streamer=streamer, logits_processor=[EosSoon(eos)], **kwargs, **extra)
    assert torch.equal(streamer.values[0], prompt[0])
    assert torch.equal(torch.cat(streamer.values[1:]), out[0, 6:])


BATCH_MODES = [
    ("llada", {"gen_length": 8, "steps": 8, "block_length": 4}),
    ("llada", {"gen_length": 8, "steps": 8, "block_length": 4, "cfg_scale": 1.0}),
    ("llada", {"gen_length": 8, "steps": 8, "block_length": 4, "diffusion_cache": "dual"}),
    ("llada", {"gen_length": 8, "block_length": 4, "parallel_decoding": "threshold", "threshold": 0.5}),
    ("llada", {"max_new_tokens": 16, "canvas_length": 8, "block_length": 4}),
    ("llada2", {"gen_length": 16, "steps": 8, "block_length": 8}),
    ("llada2", {"max_new_tokens": 32, "block_length": 8}),
    ("llada2", {"gen_length": 16, "steps": 8, "block_length": 8, "editing_threshold": 0.5}),
]


@pytest.mark.parametrize("family, kwargs", BATCH_MODES)
def test_padded_batch_equals_single_rows_in_float64(llada, llada2, family, kwargs):
    model = llada if family == "llada" else llada2
    extra = {"mask_token_id": LLADA2_MASK} if family == "llada2" else {}
    prompts = [prompt_of(3, seed=10)[0], prompt_of(7, seed=11)[0]]
    pad = model.generation_config.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.stack([torch.cat([torch.full((width - len(p),), pad), p]) for p in prompts])
    mask = torch.stack([torch.cat([torch.zeros(width - len(p)), torch.ones(len(p))]) for p in prompts]).long()
    batch = model.generate(ids, attention_mask=mask, **kwargs, **extra)
    for row, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], **kwargs, **extra)[0]
        answer = batch[row, width:]
        assert torch.equal(answer[: alone.numel() - len(prompt)], alone[len(prompt) :]), (family, kwargs, row)
        assert (answer[alone.numel() - len(prompt) :] == pad).all()


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator():
    tokenizer = AutoTokenizer.from_pretrained(llada_hf.BUNDLED_MODEL_PATH, padding_side="left")
    return pipeline("text-generation", model=llada_hf.BUNDLED_MODEL_PATH, tokenizer=tokenizer)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"num_beams": 3}, ValueError, "num_beams"),
        ({"temperature": NAN}, ValueError, "temperature"),
        ({"top_p": 3.0}, ValueError, "top_p"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ({"max_new_tokens": -5}, ValueError, "max_new_tokens"),
        ({"no_repeat_ngram_size": 3}, ValueError, "no_repeat_ngram_size"),
        ({"steps": 3, "gen_length": 16, "block_length": 2}, ValueError, "steps"),
        ({"output_scores": True}, ValueError, "output_scores"),
        ({"prefix_allowed_tokens_fn": lambda batch, ids: [0]}, TypeError, "prefix_allowed_tokens_fn"),
    ],
)
def test_pipeline_bad_kwargs_name_themselves(generator, kwargs, error, name):
    with pytest.raises(error, match=name):
        generator([{"role": "user", "content": "Sort: 3 1 2"}], **kwargs)


def test_pipeline_batch_with_padding_equals_single_calls(generator):
    chats = [[{"role": "user", "content": "Sort: 9 4 7 1 3"}], [{"role": "user", "content": "Sort: 3 1"}]]
    together = generator(chats, batch_size=2)
    alone = [generator(chat) for chat in chats]
    assert [o[0]["generated_text"][-1] for o in together] == [o[0]["generated_text"][-1] for o in alone]


def test_sampling_is_reproducible_with_a_seed(llada):
    prompt = prompt_of(4, seed=12)
    kwargs = {"max_new_tokens": 8, "canvas_length": 8, "block_length": 8, "do_sample": True}
    first = llada.generate(prompt, generator=torch.Generator().manual_seed(3), **kwargs)
    second = llada.generate(prompt, generator=torch.Generator().manual_seed(3), **kwargs)
    assert torch.equal(first, second) and not math.isnan(float(first.float().mean()))

"""Diffusion `generate()` on LLaDA 1.x: token identity with the official sampler, batching, early stop, infilling,
classifier-free guidance, streaming, pipelines, configuration and input validation.

`reference_generate` below is an independent, deliberately plain re-implementation of the official `generate.py`
semantics (one row loop, full canvas every step); the tests compare `model.generate()` with it in float64.
"""

import json
import logging
import re

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerFast,
    TextDiffusionStreamer,
    pipeline,
)
from transformers.generation.streamers import BaseStreamer

import llada_hf  # noqa: F401  (registers the models)
from llada_hf.generation import LLaDAGenerationConfig


LLADA_FIXTURE = "llada-tiny-random"
MASK, EOS, VOCAB = 126, 125, 128


# ---------------------------------------------------------------------------------------------------------------------
# Reference sampler (official generate.py semantics)
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def reference_generate(
    model,
    prompt,
    attention_mask=None,
    steps=8,
    gen_length=8,
    block_length=8,
    temperature=0.0,
    cfg_scale=0.0,
    remasking="low_confidence",
    mask_id=MASK,
    logits_eos_inf=False,
    confidence_eos_eot_inf=False,
    eos_ids=(EOS,),
):
    """Returns `(canvas, number_of_forward_passes)`."""
    batch, prompt_len = prompt.shape
    x = torch.cat([prompt, torch.full((batch, gen_length), mask_id, dtype=torch.long)], dim=1)
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones(batch, gen_length, dtype=attention_mask.dtype)], 1)
    given = x != mask_id
    blocks = gen_length // block_length
    per_block = steps // blocks
    forwards = 0
    for b in range(blocks):
        lo, hi = prompt_len + b * block_length, prompt_len + (b + 1) * block_length
        counts = (x[:, lo:hi] == mask_id).sum(1).tolist()
        plan = [[n // per_block + (i < n % per_block) for i in range(per_block)] for n in counts]
        for i in range(per_block):
            masked = x == mask_id
            if cfg_scale > 0:
                uncond = x.clone()
                uncond[given] = mask_id
                both_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
                cond_logits, un_logits = model(torch.cat([x, uncond]), attention_mask=both_mask).logits.chunk(2)
                logits = un_logits + (cfg_scale + 1) * (cond_logits - un_logits)
            else:
                logits = model(x, attention_mask=attention_mask).logits
            forwards += 1
            if logits_eos_inf:
                logits[:, :, list(eos_ids)] = -torch.inf
            if temperature > 0:
                noisy = (
                    logits.to(torch.float64).exp()
                    / (-torch.log(torch.rand_like(logits, dtype=torch.float64))) ** temperature
                )
                x0 = noisy.argmax(-1)
            else:
                x0 = logits.argmax(-1)
            if confidence_eos_eot_inf:
                logits[:, :, list(eos_ids)] = -torch.inf
            if remasking == "low_confidence":
                prob = torch.softmax(logits.to(torch.float64), -1).gather(-1, x0[..., None])[..., 0]
            else:
                prob = torch.rand(x0.shape)
            prob[:, hi:] = -np.inf
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, prob, -np.inf)
            for j in range(batch):
                chosen = torch.topk(conf[j], k=plan[j][i]).indices
                x[j, chosen] = x0[j, chosen]
    return x, forwards


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(request):
    path = request.config.rootpath / "modeling_tests" / "fixtures" / LLADA_FIXTURE
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)


def left_padded(prompts, pad=EOS):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def random_prompt(length, seed):
    return torch.randint(0, 120, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


class ForceTokenAfter(LogitsProcessor):
    """Makes `token` overwhelmingly likely at canvas columns >= `column` (to make EOS appear where a test needs it)."""

    def __init__(self, token, column):
        self.token, self.column = token, column

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.column :, self.token] += 50.0
        return scores


class RecordingStreamer(BaseStreamer):
    def __init__(self):
        self.puts, self.drafts, self.ended = [], [], False

    def put(self, value):
        self.puts.append(value.reshape(-1).tolist())

    def put_draft(self, value):
        self.drafts.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


def tiny_tokenizer():
    """Word-level tokenizer over the tiny model's 128 ids, built locally (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(VOCAB)}
    vocab.update({"<eos>": EOS, "<mask>": MASK, "<unk>": 127})
    for name in ("w125", "w126", "w127"):
        vocab.pop(name)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>", mask_token="<mask>", unk_token="<unk>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}w1 {{ m['content'] }} w2 {% endfor %}{% if add_generation_prompt %}w3{% endif %}"
    )
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------------
# Token identity with the official sampler
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [8, 4])  # one token per step, then two
def test_single_block_matches_reference(model, steps):
    prompt = torch.tensor([random_prompt(6, 0)])
    expected, forwards = reference_generate(model, prompt, steps=steps, gen_length=8, block_length=8)
    out = model.generate(prompt, max_new_tokens=8, steps=steps, block_length=8, return_dict_in_generate=True)
    assert torch.equal(out.sequences, expected)
    assert out.nfe == forwards == steps


def test_semi_autoregressive_padded_batch_matches_reference(model):
    ids, mask = left_padded([random_prompt(3, 1), random_prompt(7, 2), random_prompt(5, 3)])
    expected, _ = reference_generate(model, ids, mask, steps=6, gen_length=12, block_length=4)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=12, steps=6, block_length=4)
    assert torch.equal(out, expected)


def test_padded_batch_rows_equal_single_rows(model):
    prompts = [random_prompt(3, 4), random_prompt(6, 5)]
    ids, mask = left_padded(prompts)
    batched = model.generate(ids, attention_mask=mask, gen_length=8, steps=8, block_length=4)
    for row, prompt in enumerate(prompts):
        single = model.generate(torch.tensor([prompt]), gen_length=8, steps=8, block_length=4)
        assert torch.equal(batched[row, -8:], single[0, -8:])


def test_cfg_with_padding_matches_reference(model):
    ids, mask = left_padded([random_prompt(4, 6), random_prompt(6, 7)])
    expected, _ = reference_generate(model, ids, mask, steps=8, gen_length=8, block_length=4, cfg_scale=1.5)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=8, steps=8, block_length=4, cfg_scale=1.5)
    assert torch.equal(out, expected)


def test_eos_options_match_reference(model):
    prompt = torch.tensor([random_prompt(5, 8)])
    eos_late = LogitsProcessorList([ForceTokenAfter(EOS, 5 + 6)])
    for options in ({"logits_eos_inf": True}, {"confidence_eos_eot_inf": True}):
        expected, _ = reference_generate(model, prompt, steps=8, gen_length=8, block_length=8, **options)
        out = model.generate(prompt, max_new_tokens=8, steps=8, block_length=8, **options)
        assert torch.equal(out, expected)
    # The EOS-suppression really acts: without it the forced EOS appears.
    with_eos = model.generate(prompt, max_new_tokens=8, steps=8, block_length=8, logits_processor=eos_late)
    without = model.generate(
        prompt, max_new_tokens=8, steps=8, block_length=8, logits_processor=eos_late, logits_eos_inf=True
    )
    assert (with_eos[0, -2:] == EOS).all() and not (without == EOS).any()


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_sampling_follows_official_random_stream(model, remasking):
    """At temperature > 0 the float64 Gumbel-max draws (and random remasking) consume the random stream exactly as
    the official code, so a seed reproduces the official samples."""
    ids, mask = left_padded([random_prompt(4, 9), random_prompt(5, 10)])
    torch.manual_seed(1234)
    expected, _ = reference_generate(
        model, ids, mask, steps=8, gen_length=8, block_length=4, temperature=0.8, remasking=remasking
    )
    torch.manual_seed(1234)
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=8, steps=8, block_length=4, temperature=0.8, remasking=remasking
    )
    assert torch.equal(out, expected)


def test_sampling_reproducible_with_generator(model):
    prompt = torch.tensor([random_prompt(4, 11)])

    def sample(seed):
        generator = torch.Generator().manual_seed(seed)
        return model.generate(prompt, max_new_tokens=8, steps=8, temperature=1.0, generator=generator)

    assert torch.equal(sample(0), sample(0))
    assert any(not torch.equal(sample(0), sample(seed)) for seed in (1, 2, 3))


def test_greedy_is_deterministic_and_does_not_mutate_inputs(model):
    ids, mask = left_padded([random_prompt(3, 12), random_prompt(5, 13)])
    ids_before, mask_before = ids.clone(), mask.clone()
    first = model.generate(ids, attention_mask=mask, max_new_tokens=8, steps=8, block_length=4)
    second = model.generate(ids, attention_mask=mask, max_new_tokens=8, steps=8, block_length=4)
    assert torch.equal(first, second)
    assert torch.equal(ids, ids_before) and torch.equal(mask, mask_before)


def test_max_new_tokens_rounds_canvas_to_whole_blocks(model):
    prompt = torch.tensor([random_prompt(4, 14)])
    expected, _ = reference_generate(model, prompt, steps=8, gen_length=8, block_length=4)
    out = model.generate(prompt, max_new_tokens=6, block_length=4)  # steps unset: one token per step
    assert out.shape == (1, 4 + 6)
    assert torch.equal(out, expected[:, : 4 + 6])


# ---------------------------------------------------------------------------------------------------------------------
# Behaviour beyond the official sampler
# ---------------------------------------------------------------------------------------------------------------------


def test_eos_early_stop_saves_forward_passes(model):
    prompt = torch.tensor([random_prompt(5, 15)])
    eos_from = LogitsProcessorList([ForceTokenAfter(EOS, 5 + 5)])  # EOS from answer position 5 on
    kwargs = {"max_new_tokens": 16, "steps": 16, "block_length": 4, "return_dict_in_generate": True}
    full = model.generate(prompt, logits_processor=eos_from, **kwargs)
    early = model.generate(prompt, logits_processor=eos_from, eos_early_stop=True, **kwargs)
    assert full.nfe == 16
    assert early.nfe == 8  # the second block completes the answer up to its EOS
    answer = full.sequences[0, 5:]
    first_eos = int((answer == EOS).nonzero()[0])
    assert torch.equal(early.sequences[0, : 5 + first_eos + 1], full.sequences[0, : 5 + first_eos + 1])
    assert (early.sequences[0, 5 + first_eos :] == EOS).all()


def test_eos_early_stop_in_batch_drops_finished_rows(model):
    ids, mask = left_padded([random_prompt(5, 16), random_prompt(5, 17)])

    # Only the first row is pushed to EOS early.
    class FirstRowEos(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            if scores.shape[0] == 2:
                scores[0, 5 + 5 :, EOS] += 50.0
            return scores

    calls = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        out = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=16,
            steps=16,
            block_length=4,
            eos_early_stop=True,
            logits_processor=LogitsProcessorList([FirstRowEos()]),
        )
    finally:
        handle.remove()
    assert calls[:8] == [2] * 8 and calls[8:] == [1] * 8  # the finished row stops costing compute
    reference = model.generate(ids[1:], attention_mask=mask[1:], max_new_tokens=16, steps=16, block_length=4)
    assert torch.equal(out[1], reference[0])


def test_infilling_fills_only_masks(model):
    prompt = random_prompt(8, 18)
    prompt[2] = prompt[5] = MASK
    prompt = torch.tensor([prompt])
    out = model.generate(prompt, max_new_tokens=8, steps=8, block_length=4, return_dict_in_generate=True)
    assert out.nfe == 8
    out = out.sequences
    assert not (out == MASK).any()
    keep = prompt != MASK
    assert torch.equal(out[:, :8][keep], prompt[keep])


def test_cfg_equals_formula_on_first_step(model):
    prompt = torch.tensor([random_prompt(4, 19)])
    seen = []

    class Record(LogitsProcessor):
        def __call__(self, input_ids, scores):
            seen.append(scores.clone())
            return scores

    model.generate(prompt, max_new_tokens=4, steps=4, block_length=4, cfg_scale=2.0, logits_processor=[Record()])
    canvas = torch.cat([prompt, torch.full((1, 4), MASK)], dim=1)
    conditional = model(canvas).logits
    unconditional = model(torch.full_like(canvas, MASK)).logits
    torch.testing.assert_close(seen[0], unconditional + 3.0 * (conditional - unconditional), rtol=0, atol=1e-12)
    assert not torch.allclose(seen[0], conditional)


def test_streamer_gets_drafts_and_final_tokens(model):
    prompt = torch.tensor([random_prompt(4, 20)])
    streamer = RecordingStreamer()
    out = model.generate(prompt, max_new_tokens=8, steps=8, block_length=4, streamer=streamer)
    assert streamer.puts[0] == prompt[0].tolist()
    assert sum(streamer.puts[1:], []) == out[0, 4:].tolist()  # every answer token exactly once, in order
    assert len(streamer.puts) > 2  # committed text arrives during generation, not only at the end
    assert len(streamer.drafts) == 8 and all(MASK not in draft for draft in streamer.drafts)
    assert streamer.ended


def test_text_diffusion_streamer_prints_final_text(model, capsys):
    tokenizer = tiny_tokenizer()
    prompt = tokenizer("w5 w6 w7", return_tensors="pt").input_ids
    out = model.generate(prompt, max_new_tokens=8, steps=8, block_length=4, streamer=TextDiffusionStreamer(tokenizer))
    printed = capsys.readouterr().out
    drafts = re.findall(r"\x1b7\x1b\[33m(.*?)\x1b\[0m\x1b8\x1b\[J", printed)
    assert len(drafts) == 8 and drafts[0]  # one draft per step, shown before anything is final
    assert re.sub(r"\x1b7\x1b\[33m.*?\x1b\[0m\x1b8\x1b\[J", "", printed) == tokenizer.decode(out[0]) + "\n"


def test_history_and_progress_bar(model, capsys):
    prompt = torch.tensor([random_prompt(4, 21)])
    out = model.generate(
        prompt,
        max_new_tokens=8,
        steps=4,
        block_length=4,
        return_dict_in_generate=True,
        output_history=True,
        show_progress=True,
    )
    assert len(out.history) == out.nfe == 4
    assert [int((h == MASK).sum()) for h in out.history] == [6, 4, 2, 0]
    assert torch.equal(out.history[-1], out.sequences)
    assert "denoising" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


def test_model_has_family_generation_config(model):
    config = model.generation_config
    assert isinstance(config, LLaDAGenerationConfig)
    assert (config.block_schedule, config.block_length, config.mask_token_id, config.do_sample) == (
        "prompt",
        32,
        MASK,
        False,
    )


def test_generation_config_round_trip(model, tmp_path):
    model.generation_config.steps = 64
    try:
        model.save_pretrained(tmp_path)
    finally:
        model.generation_config.steps = None
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["steps"] == 64 and saved["block_schedule"] == "prompt"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    assert isinstance(reloaded.generation_config, LLaDAGenerationConfig)
    assert reloaded.generation_config.steps == 64 and reloaded.generation_config.remasking == "low_confidence"


def test_plain_generation_config_is_accepted(model):
    prompt = torch.tensor([random_prompt(4, 22)])
    expected = model.generate(prompt, max_new_tokens=4, steps=4, block_length=4)
    out = model.generate(prompt, generation_config=GenerationConfig(max_new_tokens=4), steps=4, block_length=4)
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"gen_length": 6, "block_length": 4, "steps": 6}, ValueError, "multiple of `block_length`"),
        ({"max_new_tokens": 8, "block_length": 4, "steps": 3}, ValueError, "divisible by the number of blocks"),
        ({"max_new_tokens": 8, "steps": 0}, ValueError, "steps"),
        ({"max_new_tokens": 8, "steps": 2.5}, TypeError, "steps"),
        ({"max_new_tokens": 8, "temperature": -0.1}, ValueError, "temperature"),
        ({"max_new_tokens": 8, "pad_token_id": MASK}, ValueError, "pad_token_id"),
        ({"gen_length": 320, "steps": 320}, ValueError, "maximum sequence length"),
        ({"max_new_tokens": 8, "remasking": "lowest"}, ValueError, "remasking"),
        ({"max_new_tokens": 8, "block_schedule": "causal"}, ValueError, "block_schedule"),
        ({"max_new_tokens": 8, "diffusion_cache": "block"}, ValueError, "diffusion_cache"),
        ({"max_new_tokens": 8, "num_beams": 2}, ValueError, "num_beams"),
        ({"max_new_tokens": 8, "beams": 2}, TypeError, "beams"),
    ],
)
def test_bad_arguments_raise(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        model.generate(torch.tensor([random_prompt(4, 23)]), **kwargs)


def test_bad_inputs_raise(model):
    right_padded = torch.tensor([[5, 6, EOS], [5, 6, 7]])
    with pytest.raises(ValueError, match="Only left padding"):
        model.generate(right_padded, attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]), max_new_tokens=4)
    model.generation_config.mask_token_id, model.config.mask_token_id = None, None
    try:
        with pytest.raises(ValueError, match="mask_token_id"):
            model.generate(torch.tensor([[5, 6]]), max_new_tokens=4)
    finally:
        model.generation_config.mask_token_id, model.config.mask_token_id = MASK, MASK


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------------------------------


def test_text_generation_pipeline_strings_and_chat(model, caplog):
    tokenizer = tiny_tokenizer()
    with caplog.at_level(logging.WARNING):
        generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    assert not [r for r in caplog.records if "not supported" in r.getMessage()]

    prompt = "w5 w6 w7"
    expected = model.generate(
        tokenizer(prompt, return_tensors="pt").input_ids, max_new_tokens=6, steps=6, block_length=2
    )
    expected_text = tokenizer.decode(expected[0, 3:], skip_special_tokens=True)
    new_text = generator(prompt, max_new_tokens=6, steps=6, block_length=2, return_full_text=False)
    assert new_text[0]["generated_text"] == expected_text
    full_text = generator(prompt, max_new_tokens=6, steps=6, block_length=2)
    assert full_text[0]["generated_text"] == prompt + expected_text

    chat = [{"role": "user", "content": "w8 w9"}]
    reply = generator(chat, max_new_tokens=4, block_length=4)[0]["generated_text"]
    assert reply[:-1] == chat and reply[-1]["role"] == "assistant"
    chat_ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    expected = model.generate(chat_ids["input_ids"], max_new_tokens=4, block_length=4)
    assert reply[-1]["content"] == tokenizer.decode(
        expected[0, chat_ids["input_ids"].shape[1] :], skip_special_tokens=True
    )

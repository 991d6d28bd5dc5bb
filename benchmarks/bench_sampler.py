"""NFE and wall time of `model.generate()` against plain loops that re-implement the official samplers, in one run.

The plain loops are what the released code does (LLaDA 1.x `generate.py`; LLaDA2.0 `generate()`: one prompt at a
time, no cache). Both sides run on the same randomly initialised model, and the table says whether their tokens agree
(LLaDA2: answers up to the first EOS). Tokens/s counts every requested answer token of every row.

    python benchmarks/bench_sampler.py                 # small random models, CPU, float32
    python benchmarks/bench_sampler.py --device cuda --dtype bfloat16 --scale 4
"""

import argparse
import functools
import time

import torch

from llada_hf import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM


VOCAB, MASK, EOS = 2048, 2047, 2046


# ---------------------------------------------------------------------------------------------------------------------
# Plain loops (official semantics)
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def plain_llada(model, prompt, attention_mask, steps, gen_length, block_length, cfg_scale=0.0):
    """LLaDA 1.x `generate.py` at temperature 0: full canvas every step, top-k per row."""
    batch, prompt_len = prompt.shape
    x = torch.cat([prompt, torch.full((batch, gen_length), MASK, device=prompt.device)], dim=1)
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones_like(x[:, prompt_len:])], dim=1)
    given = x != MASK
    per_block = steps // (gen_length // block_length)
    nfe = 0
    for start in range(prompt_len, prompt_len + gen_length, block_length):
        counts = (x[:, start : start + block_length] == MASK).sum(1)
        quotas = counts[:, None] // per_block + (
            torch.arange(per_block, device=x.device) < (counts % per_block)[:, None]
        )
        for i in range(per_block):
            masked = x == MASK
            if cfg_scale > 0:
                uncond = x.masked_fill(given, MASK)
                both = None if attention_mask is None else attention_mask.repeat(2, 1)
                cond, un = model(torch.cat([x, uncond]), attention_mask=both).logits.chunk(2)
                logits = un + (cfg_scale + 1) * (cond - un)
            else:
                logits = model(x, attention_mask=attention_mask).logits
            nfe += 1
            x0 = logits.argmax(-1)
            prob = torch.softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
            prob[:, start + block_length :] = -torch.inf
            conf = torch.where(masked, prob, -torch.inf)
            for j in range(batch):
                chosen = torch.topk(conf[j], int(quotas[j, i])).indices
                x[j, chosen] = x0[j, chosen]
    return x, nfe


@torch.no_grad()
def plain_llada2(model, prompt, gen_length, block_length, steps, threshold):
    """LLaDA2.0 `generate()` for one prompt `[1, L]`: uncached, block-causal mask up to the active block."""
    prompt_len = prompt.shape[1]
    num_blocks = -(-(prompt_len + gen_length) // block_length)
    block_of = torch.arange(num_blocks * block_length, device=prompt.device) // block_length
    attend = (block_of[None, :] <= block_of[:, None])[None, None]
    x = torch.full((1, num_blocks * block_length), MASK, device=prompt.device)
    x[:, :prompt_len] = prompt
    quota = [block_length // steps + (i < block_length % steps) for i in range(steps)]
    nfe = 0
    for b in range(prompt_len // block_length, num_blocks):
        end = (b + 1) * block_length
        for step in range(steps):
            active = x[0, end - block_length : end] == MASK
            if not active.any():
                break
            positions = torch.arange(end, device=x.device)[None]
            logits = model(x[:, :end], attention_mask=attend[..., :end, :end], position_ids=positions).logits
            logits = logits[0, -block_length:]
            nfe += 1
            x0 = logits.argmax(-1)
            conf = torch.where(active, torch.softmax(logits, -1).gather(-1, x0[:, None])[:, 0], -torch.inf)
            chosen = conf > threshold
            if chosen.sum() < quota[step]:
                chosen = torch.zeros_like(chosen)
                chosen[torch.topk(conf, min(quota[step], int(active.sum()))).indices] = True
            x[0, end - block_length : end][chosen] = x0[chosen]
        if (x[0, prompt_len:end] == EOS).any():
            break
    return x[:, : prompt_len + gen_length], nfe


# ---------------------------------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------------------------------


def timed(function, device, repeats):
    """Best wall time over `repeats` runs (after one warm-up) and the last result."""
    result = function()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def until_eos(answer):
    eos = (answer == EOS).nonzero()
    return answer[: int(eos[0]) + 1] if len(eos) else answer


def build_models(scale, dtype, device):
    torch.manual_seed(0)
    llada = LLaDAModelLM(
        LLaDAConfig(
            d_model=128 * scale,
            n_heads=4 * scale,
            n_kv_heads=4 * scale,
            n_layers=4,
            mlp_hidden_size=384 * scale,
            vocab_size=VOCAB,
            embedding_size=VOCAB,
            max_sequence_length=1024,
            mask_token_id=MASK,
            eos_token_id=EOS,
            pad_token_id=EOS,
        )
    )
    llada2 = LLaDA2MoeModelLM(
        LLaDA2MoeConfig(
            vocab_size=VOCAB,
            hidden_size=128 * scale,
            intermediate_size=384 * scale,
            num_hidden_layers=4,
            num_attention_heads=4 * scale,
            num_key_value_heads=2 * scale,
            head_dim=32,
            num_experts=16,
            num_experts_per_tok=4,
            n_group=4,
            topk_group=2,
            moe_intermediate_size=64 * scale,
            max_position_embeddings=1024,
            mask_token_id=MASK,
            eos_token_id=EOS,
            pad_token_id=EOS,
        )
    )
    return llada.to(device, dtype).eval(), llada2.to(device, dtype).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    parser.add_argument("--scale", type=int, default=1, help="width multiplier of the random models")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    llada, llada2 = build_models(args.scale, dtype, device)
    generator = torch.Generator().manual_seed(1)

    def prompts(lengths):
        rows = [torch.randint(0, VOCAB - 8, (n,), generator=generator).tolist() for n in lengths]
        width = max(lengths)
        ids = torch.tensor([[EOS] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        return ids, mask

    rows = []

    # LLaDA 1.x: the official sampler, batch 1 and a padded batch, with and without CFG.
    for name, lengths, gen, block, steps, cfg in [
        ("LLaDA b1 128 tok, block 32, 1 tok/step", [48], 128, 32, 128, 0.0),
        ("LLaDA b1 128 tok, block 32, 2 tok/step", [48], 128, 32, 64, 0.0),
        ("LLaDA b4 padded 64 tok, block 16", [20, 48, 33, 41], 64, 16, 64, 0.0),
        ("LLaDA b2 padded 64 tok, CFG 1.0", [20, 48], 64, 32, 32, 1.0),
    ]:
        ids, mask = prompts(lengths)
        mask = mask if len(lengths) > 1 else None
        plain = functools.partial(plain_llada, llada, ids, mask, steps, gen, block, cfg)
        plain_time, (plain_out, plain_nfe) = timed(plain, device, args.repeats)
        ours = functools.partial(
            llada.generate,
            ids,
            attention_mask=mask,
            max_new_tokens=gen,
            steps=steps,
            block_length=block,
            cfg_scale=cfg,
            return_dict_in_generate=True,
        )
        ours_time, ours = timed(ours, device, args.repeats)
        tokens = gen * len(lengths)
        same = torch.equal(plain_out, ours.sequences)
        rows.append((name, "plain generate.py loop", plain_nfe, plain_time, tokens / plain_time, ""))
        rows.append((name, "model.generate()", ours.nfe, ours_time, tokens / ours_time, "yes" if same else "NO"))

    # LLaDA2.0: the official sampler (one prompt at a time, uncached) vs generate() batched, uncached and cached.
    ids, mask = prompts([21, 40, 9, 33])
    gen, block, steps, threshold = 96, 16, 16, 0.9

    def plain_all():
        results = [
            plain_llada2(llada2, ids[r : r + 1, (mask[r] == 0).sum() :], gen, block, steps, threshold)
            for r in range(ids.shape[0])
        ]
        return [out[0, -gen:] for out, _ in results], sum(nfe for _, nfe in results)

    plain_time, (plain_answers, plain_nfe) = timed(plain_all, device, args.repeats)
    name = "LLaDA2 b4 padded 96 tok, block 16, thr 0.9"
    tokens = gen * ids.shape[0]
    rows.append((name, "plain generate() loop, per row", plain_nfe, plain_time, tokens / plain_time, ""))
    for cache in ("none", "block"):
        ours = functools.partial(
            llada2.generate,
            ids,
            attention_mask=mask,
            max_new_tokens=gen,
            block_length=block,
            steps=steps,
            threshold=threshold,
            diffusion_cache=cache,
            return_dict_in_generate=True,
        )
        ours_time, ours = timed(ours, device, args.repeats)
        same = all(
            torch.equal(until_eos(ours.sequences[r, -gen:]), until_eos(plain_answers[r])) for r in range(ids.shape[0])
        )
        rows.append(
            (
                name,
                f"model.generate(), cache={cache}",
                ours.nfe,
                ours_time,
                tokens / ours_time,
                "yes" if same else "NO",
            )
        )

    header = f"{'workload':<44} {'sampler':<32} {'NFE':>5} {'wall s':>8} {'answer tok/s':>12} {'same tokens':>11}"
    print(f"device={device} dtype={args.dtype} scale={args.scale}")
    print(header)
    print("-" * len(header))
    for name, sampler, nfe, seconds, rate, same in rows:
        print(f"{name:<44} {sampler:<32} {nfe:>5} {seconds:>8.3f} {rate:>12.1f} {same:>11}")


if __name__ == "__main__":
    main()

"""An independent float64 re-statement of the released LLaDA 1.x forward, over the released key names.

It follows the released modeling code's casts step by step (RMSNorm in float32 then cast back, RoPE on float32
copies of q/k, SDPA with an additive `finfo.min` padding bias) so that tests can demand agreement to 1e-8 in
float64, which is what the conformance suite asks of the real released code.
"""

import torch
import torch.nn.functional as F


def _rms_norm(x, weight, eps):
    og_dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(og_dtype)


def _rope_tables(seq_len, dim, theta, device):
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float) / dim))
    seq = torch.arange(seq_len, device=device, dtype=torch.float)
    freqs = torch.einsum("i , j -> i j", seq, inv_freq)
    positions = torch.cat((freqs, freqs), dim=-1)
    return positions.sin()[None, None], positions.cos()[None, None]


def _rotate(t, sin, cos):
    first, second = t[..., : t.shape[-1] // 2], t[..., t.shape[-1] // 2 :]
    rotated = torch.cat((-second, first), dim=-1)
    return (t * cos + rotated * sin).to(t.dtype)


def released_llada_logits(state_dict, config, input_ids, attention_mask=None):
    """Logits of the released LLaDA model for `input_ids`, given its checkpoint tensors (released names)."""
    w = {k.removeprefix("model.transformer."): v for k, v in state_dict.items()}
    batch, seq = input_ids.shape
    n_heads, n_kv = config["n_heads"], config.get("n_kv_heads") or config["n_heads"]
    head_dim = config["d_model"] // n_heads
    eps = config["rms_norm_eps"]

    x = F.embedding(input_ids, w["wte.weight"])
    bias = None
    if attention_mask is not None:
        bias = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * torch.finfo(x.dtype).min
    sin, cos = _rope_tables(seq, head_dim, config["rope_theta"], x.device)

    for i in range(config["n_layers"]):
        p = f"blocks.{i}."
        h = _rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = F.linear(h, w[p + "q_proj.weight"]).view(batch, seq, n_heads, head_dim).transpose(1, 2)
        k = F.linear(h, w[p + "k_proj.weight"]).view(batch, seq, n_kv, head_dim).transpose(1, 2)
        v = F.linear(h, w[p + "v_proj.weight"]).view(batch, seq, n_kv, head_dim).transpose(1, 2)
        q_, k_ = q.float(), k.float()
        q, k = _rotate(q_, sin, cos).type_as(q), _rotate(k_, sin, cos).type_as(k)
        if n_kv != n_heads:
            k = k.repeat_interleave(n_heads // n_kv, dim=1)
            v = v.repeat_interleave(n_heads // n_kv, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=False)
        att = att.transpose(1, 2).reshape(batch, seq, -1)
        x = x + F.linear(att, w[p + "attn_out.weight"])
        h = _rms_norm(x, w[p + "ff_norm.weight"], eps)
        ff = F.silu(F.linear(h, w[p + "ff_proj.weight"])) * F.linear(h, w[p + "up_proj.weight"])
        x = x + F.linear(ff, w[p + "ff_out.weight"])
    x = _rms_norm(x, w["ln_f.weight"], eps)
    return F.linear(x, w["ff_out.weight"])

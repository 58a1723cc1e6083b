"""Attention processors for diffusers' FLUX and SD3 attention modules that call SP attention.

They replace the stock processors (`set_attn_processor`) so the rest of diffusers' blocks run
unchanged on a shard of image tokens: every other layer of a DiT block is per token. The
processor only needs to know how many leading (FLUX) or trailing (SD3) tokens are text, which
the model adapter writes into the shared `SPContext` before each forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .sp_attention import LocalAttention

Tensor = torch.Tensor


@dataclass
class SPContext:
    """Per-process state shared by all processors of one model: the task's SP attention."""

    attention: Any = field(default_factory=LocalAttention)
    text_len: int = 0


def _heads(x: Tensor, head_dim: int) -> Tensor:
    return x.unflatten(-1, (-1, head_dim))


class FluxSPProcessor:
    """FLUX attention (dual- and single-stream blocks): text first, RoPE on the local tokens."""

    def __init__(self, ctx: SPContext):
        self.ctx = ctx

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor] = None,
                 attention_mask: Optional[Tensor] = None, image_rotary_emb: Any = None) -> Any:
        from diffusers.models.embeddings import apply_rotary_emb

        hd = attn.head_dim
        q = attn.norm_q(_heads(attn.to_q(hidden_states), hd))
        k = attn.norm_k(_heads(attn.to_k(hidden_states), hd))
        v = _heads(attn.to_v(hidden_states), hd)
        if encoder_hidden_states is not None:  # dual-stream block: text comes separately
            tq = attn.norm_added_q(_heads(attn.add_q_proj(encoder_hidden_states), hd))
            tk = attn.norm_added_k(_heads(attn.add_k_proj(encoder_hidden_states), hd))
            tv = _heads(attn.add_v_proj(encoder_hidden_states), hd)
            q, k, v = (torch.cat(p, dim=1) for p in ((tq, q), (tk, k), (tv, v)))
            n_txt = encoder_hidden_states.shape[1]
        else:  # single-stream block: text is the first text_len tokens of hidden_states
            n_txt = self.ctx.text_len
        if image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        img = (q[:, n_txt:], k[:, n_txt:], v[:, n_txt:])
        txt = (q[:, :n_txt], k[:, :n_txt], v[:, :n_txt]) if n_txt else None
        o_img, o_txt = self.ctx.attention(img, txt, text_first=True)
        o_img = o_img.flatten(2, 3).to(q.dtype)
        if encoder_hidden_states is not None:
            o_txt = o_txt.flatten(2, 3).to(q.dtype)
            o_img = attn.to_out[1](attn.to_out[0](o_img.contiguous()))
            return o_img, attn.to_add_out(o_txt.contiguous())
        if o_txt is None:
            return o_img
        return torch.cat((o_txt.flatten(2, 3).to(q.dtype), o_img), dim=1)


class SD3SPProcessor:
    """SD3 joint attention: image first, text appended; also the image-only `attn2` of SD3.5."""

    def __init__(self, ctx: SPContext):
        self.ctx = ctx

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor] = None,
                 attention_mask: Optional[Tensor] = None, *args: Any, **kwargs: Any) -> Any:
        hd = attn.to_k.out_features // attn.heads
        q, k, v = (_heads(f(hidden_states), hd) for f in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        txt = None
        if encoder_hidden_states is not None:
            tq, tk, tv = (_heads(f(encoder_hidden_states), hd) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
            if attn.norm_added_q is not None:
                tq, tk = attn.norm_added_q(tq), attn.norm_added_k(tk)
            txt = (tq, tk, tv)
        o_img, o_txt = self.ctx.attention((q, k, v), txt, text_first=False)
        o_img = attn.to_out[1](attn.to_out[0](o_img.flatten(2, 3).to(q.dtype)))
        if encoder_hidden_states is None:
            return o_img
        o_txt = o_txt.flatten(2, 3).to(q.dtype)
        if not attn.context_pre_only:
            o_txt = attn.to_add_out(o_txt)
        return o_img, o_txt

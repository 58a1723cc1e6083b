"""Sequence-parallel (Ulysses) joint attention over one GPU set's process group.

Layout: image tokens are split along the sequence across the set, text tokens are replicated
on every rank. Image q/k/v go through one all-to-all (sequence shard -> head shard), each rank
takes its own head slice of the replicated text, runs full-sequence attention for its heads,
then the image output goes back with a second all-to-all and the text output is all-gathered
over heads. Attention per head sees the whole sequence in the original order, so the result
equals unsharded attention up to GEMM reassociation in the surrounding layers.

Two backends share that interface:
- `TorchUlysses`: own all_to_all_single + SDPA; runs over gloo (CPU) and NCCL.
- `YunchangUlysses`: yunchang's all_to_all_4D for the exchange and flash-attn when present
  (else SDPA); for CUDA. xfuser's own USP layer is not used because its parallel degree is
  process-wide state; here the group is chosen per task.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

Tensor = torch.Tensor


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Attention on [B, S, H, D] tensors (diffusers' processor layout)."""
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return o.transpose(1, 2)


class LocalAttention:
    """Degree 1: plain attention, text and image concatenated as the model does."""

    degree = 1
    name = "local"

    def __call__(self, img: tuple[Tensor, Tensor, Tensor], txt: Optional[tuple[Tensor, Tensor, Tensor]],
                 text_first: bool) -> tuple[Tensor, Optional[Tensor]]:
        if txt is None:
            return sdpa(*img), None
        parts = [torch.cat((t, i) if text_first else (i, t), dim=1) for i, t in zip(img, txt)]
        o = sdpa(*parts)
        n_txt = txt[0].shape[1]
        if text_first:
            return o[:, n_txt:], o[:, :n_txt]
        n_img = img[0].shape[1]
        return o[:, :n_img], o[:, n_img:]


class TorchUlysses:
    """Ulysses attention with torch.distributed.all_to_all_single (works on gloo and NCCL)."""

    name = "torch"

    def __init__(self, group, degree: int, rank_in_group: int,
                 kernel: Callable[[Tensor, Tensor, Tensor], Tensor] = sdpa):
        self.group, self.degree, self.rank, self.kernel = group, degree, rank_in_group, kernel

    # -- exchanges (override in subclasses) ------------------------------------------------
    def seq_to_heads(self, x: Tensor) -> Tensor:
        """[B, n, G, H, D] (G stacked tensors) -> [B, n*k, G, H/k, D]: one collective for q, k and v."""
        b, n, g, h, d = x.shape
        k = self.degree
        send = x.reshape(b, n, g, k, h // k, d).permute(3, 0, 1, 2, 4, 5).contiguous()
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.group)
        return recv.permute(1, 0, 2, 3, 4, 5).reshape(b, k * n, g, h // k, d)

    def heads_to_seq(self, x: Tensor) -> Tensor:
        """[B, N, H/k, D] -> [B, N/k, H, D]."""
        b, big_n, hk, d = x.shape
        k = self.degree
        send = x.reshape(b, k, big_n // k, hk, d).transpose(0, 1).contiguous()
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.group)
        return recv.permute(1, 2, 0, 3, 4).reshape(b, big_n // k, k * hk, d)

    def gather_heads(self, x: Tensor) -> Tensor:
        """[B, T, H/k, D] on every rank -> [B, T, H, D] (heads in rank order)."""
        parts = [torch.empty_like(x) for _ in range(self.degree)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=2)

    def img_qkv_to_heads(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        full = self.seq_to_heads(torch.stack((q, k, v), dim=2))
        return full[:, :, 0], full[:, :, 1], full[:, :, 2]

    # -- attention ---------------------------------------------------------------------------
    def __call__(self, img: tuple[Tensor, Tensor, Tensor], txt: Optional[tuple[Tensor, Tensor, Tensor]],
                 text_first: bool) -> tuple[Tensor, Optional[Tensor]]:
        heads = img[0].shape[2]
        if heads % self.degree:
            raise ValueError(f"{heads} attention heads do not split over {self.degree} ranks")
        hk = heads // self.degree
        qi, ki, vi = self.img_qkv_to_heads(*img)
        n_img = qi.shape[1]
        if txt is not None:
            sl = slice(self.rank * hk, (self.rank + 1) * hk)
            qt, kt, vt = (t[:, :, sl] for t in txt)
            cat = (lambda i, t: torch.cat((t, i), dim=1)) if text_first else (lambda i, t: torch.cat((i, t), dim=1))
            o = self.kernel(cat(qi, qt), cat(ki, kt), cat(vi, vt))
            n_txt = qt.shape[1]
            o_img, o_txt = (o[:, n_txt:], o[:, :n_txt]) if text_first else (o[:, :n_img], o[:, n_img:])
            return self.heads_to_seq(o_img.contiguous()), self.gather_heads(o_txt)
        return self.heads_to_seq(self.kernel(qi, ki, vi).contiguous()), None


class YunchangUlysses(TorchUlysses):
    """Same algorithm with yunchang's all-to-all and, when installed, flash-attn (CUDA path)."""

    name = "yunchang"

    def __init__(self, group, degree: int, rank_in_group: int):
        from yunchang.comm.all_to_all import all_to_all_4D  # lazy: optional dependency

        self._a2a = all_to_all_4D
        super().__init__(group, degree, rank_in_group, kernel=_cuda_kernel())

    def img_qkv_to_heads(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(self._a2a(t.contiguous(), scatter_idx=2, gather_idx=1, group=self.group) for t in (q, k, v))

    def heads_to_seq(self, x: Tensor) -> Tensor:
        return self._a2a(x.contiguous(), scatter_idx=1, gather_idx=2, group=self.group)


def _cuda_kernel() -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """flash-attn for half precision on CUDA when importable, SDPA otherwise."""
    try:
        from flash_attn import flash_attn_func  # type: ignore
    except ImportError:
        return sdpa

    def kernel(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
            return flash_attn_func(q, k, v)  # [B, S, H, D] layout, as here
        return sdpa(q, k, v)

    return kernel


def yunchang_available() -> bool:
    try:
        import yunchang.comm.all_to_all  # noqa: F401
    except Exception:
        return False
    return True


def make_attention(backend: str, group, degree: int, rank_in_group: int):
    """The SP attention for one GPU set: `backend` is 'torch', 'yunchang' or 'auto'.

    'auto' picks yunchang on CUDA when it imports, else the own torch backend.
    """
    if degree == 1:
        return LocalAttention()
    if backend == "auto":
        backend = "yunchang" if torch.cuda.is_available() and yunchang_available() else "torch"
    if backend == "yunchang":
        return YunchangUlysses(group, degree, rank_in_group)
    if backend == "torch":
        return TorchUlysses(group, degree, rank_in_group)
    raise ValueError(f"unknown SP attention backend {backend!r} (torch, yunchang, auto)")

"""Sequence-parallel (Ulysses) joint attention over one GPU set's process group.

Layout: image tokens are split along the sequence across the set, text tokens are replicated
on every rank. Image q/k/v go through one all-to-all (sequence shard -> head shard), each rank
takes its own head slice of the replicated text, runs full-sequence attention for its heads,
then the image output goes back with a second all-to-all and the text output is all-gathered
over heads. Attention per head sees the whole sequence in the original order, so the result
equals unsharded attention up to GEMM reassociation in the surrounding layers.

Three backends share that interface (`--sp-backend`):
- `own` (`TorchUlysses`): own all_to_all_single + SDPA; runs over gloo (CPU) and NCCL. The
  CPU/gloo path.
- `yunchang` (`YunchangUlysses`): yunchang's all_to_all_4D for the exchange and flash-attn when
  present (else SDPA); CUDA.
- `xfuser` (`XfuserUlysses`): xfuser's xFuserLongContextAttention, one instance per GPU set
  (xfuser's process-wide degree is never used; the group is chosen per task); CUDA.
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


def _stub_yunchang_for_xfuser() -> None:
    """xfuser 0.7.0 imports `yunchang.ring.utils.update_npu_out`, which yunchang 0.6.4 (the newest)
    lacks; it is used only on Ascend NPUs, so a stub that raises is enough to import it on CUDA."""
    import yunchang.ring.utils as ru

    if not hasattr(ru, "update_npu_out"):
        def update_npu_out(*args, **kwargs):
            raise NotImplementedError("update_npu_out: Ascend NPU only (stub for xfuser 0.7.0 on yunchang 0.6.4)")

        ru.update_npu_out = update_npu_out


def xfuser_available() -> bool:
    """xfuser's attention imports (it needs CUDA: without a GPU it skips importing yunchang)."""
    if not torch.cuda.is_available():
        return False
    try:
        _stub_yunchang_for_xfuser()
        from xfuser.core.long_ctx_attention import xFuserLongContextAttention  # noqa: F401
    except Exception:
        return False
    return True


class XfuserUlysses:
    """xfuser's `xFuserLongContextAttention` on one GPU set (CUDA).

    Its yunchang base class reads the Ulysses and ring groups from yunchang's process-wide
    PROCESS_GROUP when it is constructed, so each set's instance is built with that set's group
    in place (one instance per set, chosen per task; xfuser's own process-wide degree is never
    used). The ring group is the rank's explicit one-rank group: Ulysses only. Text goes in as
    xfuser's joint tensors (FLUX in front, SD3 behind): only its heads slice is attended per rank,
    not replicated through the all-to-alls. q, k, v travel packed in one all-to-all, the output
    in a second one: two collectives per attention layer.
    """

    name = "xfuser"

    def __init__(self, group, degree: int, rank_in_group: int, ring_group):
        _stub_yunchang_for_xfuser()
        from xfuser.core.long_ctx_attention import AttnType, xFuserLongContextAttention
        from yunchang.globals import PROCESS_GROUP

        if ring_group is None:
            raise ValueError("the xfuser backend needs an explicit one-rank ring group per rank")
        try:
            import flash_attn  # noqa: F401
            kind = AttnType.FA
        except ImportError:
            kind = AttnType.TORCH_EFFICIENT
        saved = PROCESS_GROUP.ULYSSES_PG, PROCESS_GROUP.RING_PG
        PROCESS_GROUP.ULYSSES_PG, PROCESS_GROUP.RING_PG = group, ring_group
        try:
            self.impl = xFuserLongContextAttention(use_pack_qkv=True, attn_type=kind)
        finally:
            PROCESS_GROUP.ULYSSES_PG, PROCESS_GROUP.RING_PG = saved
        self.degree, self.rank = degree, rank_in_group

    def __call__(self, img: tuple[Tensor, Tensor, Tensor], txt: Optional[tuple[Tensor, Tensor, Tensor]],
                 text_first: bool) -> tuple[Tensor, Optional[Tensor]]:
        heads = img[0].shape[2]
        if heads % self.degree:
            raise ValueError(f"{heads} attention heads do not split over {self.degree} ranks")
        q, k, v = (t.contiguous() for t in img)
        if txt is None:
            return self.impl(None, q, k, v), None
        out = self.impl(None, q, k, v, joint_tensor_query=txt[0].contiguous(), joint_tensor_key=txt[1].contiguous(),
                        joint_tensor_value=txt[2].contiguous(), joint_strategy="front" if text_first else "rear")
        n_txt = txt[0].shape[1]
        if text_first:
            return out[:, n_txt:], out[:, :n_txt]
        return out[:, :-n_txt], out[:, -n_txt:]


BACKENDS = ("auto", "own", "torch", "yunchang", "xfuser")


def resolve_backend(backend: str, device: str) -> str:
    """'auto' -> xfuser on CUDA when it imports, else yunchang when it imports, else own; 'torch' is
    the old name of 'own'."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown SP attention backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "torch":
        return "own"
    if backend == "auto":
        if device == "cuda" and xfuser_available():
            return "xfuser"
        if device == "cuda" and yunchang_available():
            return "yunchang"
        return "own"
    return backend


def make_attention(backend: str, group, degree: int, rank_in_group: int, ring_group=None):
    """The SP attention for one GPU set: `backend` is 'own', 'yunchang', 'xfuser' (resolved, see
    `resolve_backend`). Degree 1 is plain attention whatever the backend."""
    if degree == 1:
        return LocalAttention()
    if backend == "yunchang":
        return YunchangUlysses(group, degree, rank_in_group)
    if backend == "xfuser":
        return XfuserUlysses(group, degree, rank_in_group, ring_group)
    if backend in ("own", "torch"):
        return TorchUlysses(group, degree, rank_in_group)
    raise ValueError(f"unknown SP attention backend {backend!r} (own, yunchang, xfuser)")

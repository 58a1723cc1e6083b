"""Ulysses SP attention over real gloo processes equals full attention; shard-local attention
(the bug SP exists to avoid) does not."""

import pytest

pytestmark = pytest.mark.runtime
torch = pytest.importorskip("torch")

from _procs import run_ranks  # noqa: E402

B, T, N, H, D = 1, 5, 16, 4, 8


def _inputs():
    g = torch.Generator().manual_seed(0)
    img = tuple(torch.randn(B, N, H, D, generator=g) for _ in range(3))
    txt = tuple(torch.randn(B, T, H, D, generator=g) for _ in range(3))
    return img, txt


def _reference(text_first: bool, with_text: bool):
    from tetriopt_runtime.sp_attention import LocalAttention

    img, txt = _inputs()
    return LocalAttention()(img, txt if with_text else None, text_first)


CASES = [(True, True), (False, True), (True, False)]  # (text_first, with_text)


def _all_cases(rank, world, backends):
    """Every backend x layout in one process group start-up (spawning costs seconds per rank)."""
    import torch.distributed as dist

    from tetriopt_runtime.sp_attention import LocalAttention, make_attention

    group = dist.new_group(list(range(world)))
    img, txt = _inputs()
    n = N // world
    img_shard = tuple(t[:, rank * n:(rank + 1) * n].contiguous() for t in img)
    out = {}
    for backend in backends:
        attn = make_attention(backend, group, world, rank)
        for text_first, with_text in CASES:
            out[backend, text_first, with_text] = attn(img_shard, txt if with_text else None, text_first)
    # each rank attends only to its own image tokens: the error SP exists to avoid
    out["local"] = LocalAttention()(img_shard, txt, True)
    return out


def _backends():
    from tetriopt_runtime.sp_attention import yunchang_available

    return ["own"] + (["yunchang"] if yunchang_available() else [])


@pytest.fixture(scope="module", params=[2, 4], ids=["world2", "world4"])
def sharded(request):
    backends = _backends()
    return request.param, backends, run_ranks(_all_cases, request.param, backends)


@pytest.mark.parametrize("text_first,with_text", CASES)
def test_ulysses_equals_full_attention(sharded, text_first, with_text):
    world, backends, outs = sharded
    ref_img, ref_txt = _reference(text_first, with_text)
    for backend in backends:
        parts = [o[backend, text_first, with_text] for o in outs]
        got = torch.cat([p[0] for p in parts], dim=1)
        assert got.shape == ref_img.shape
        err = (got - ref_img).abs().max().item()
        assert err <= 1e-6, (backend, world, err)
        if with_text:
            for p in parts:  # every rank ends with the whole text output
                assert (p[1] - ref_txt).abs().max().item() <= 1e-6
        else:
            assert all(p[1] is None for p in parts)


def test_shard_local_attention_is_wrong(sharded):
    _, _, outs = sharded
    ref_img, _ = _reference(True, True)
    got = torch.cat([o["local"][0] for o in outs], dim=1)
    assert (got - ref_img).abs().max().item() > 1e-2

"""The worker's step on a stacked batch of same-size latents with per-sample timesteps (what
issue 13's batched assignments need) equals each request's unbatched steps, at degree 1 in this
process and at degree 2 over real gloo processes (fp32 CPU, tolerance 1e-5)."""

import pytest

pytestmark = pytest.mark.runtime
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from _procs import run_ranks  # noqa: E402

PX, STEPS = 64, 6
STARTS = (0, 3)  # the two requests sit at different steps: different timesteps in one batch


def _run(rank, world, kind):
    """Three steps of two requests, one at a time and as one batch, on this rank's shard."""
    import torch.distributed as dist

    from tetriopt_runtime.models import TINY_SCHEDULER, Adapter, Aux, Conditioning, ModelSpec, load_transformer, tokens_of
    from tetriopt_runtime.sampler import denoise_step, flow_sigmas
    from tetriopt_runtime.sp_attention import make_attention

    spec = ModelSpec(kind)
    model, ctx = load_transformer(spec, torch.device("cpu"))
    if world > 1:
        ctx.attention = make_attention("own", dist.new_group(list(range(world))), world, rank)
    ad, aux = Adapter(spec, model, ctx), Aux(spec, torch.device("cpu"))
    n_tok = tokens_of(PX, PX)
    n = n_tok // world
    sg = flow_sigmas(TINY_SCHEDULER, STEPS, n_tok)
    xs = [aux.noise(PX, PX, seed)[:, rank * n:(rank + 1) * n] for seed in (1, 2)]
    conds = [aux.encode(p) for p in ("a red fox", "a boat at night")]
    alone = []
    for x, c, s0 in zip(xs, conds, STARTS):
        for s in range(s0, s0 + 3):
            x = denoise_step(ad, x, rank * n, PX, PX, float(sg[s]), float(sg[s + 1]), c)
        alone.append(x)
    xb, cb = torch.cat(xs), Conditioning.stack(conds)
    for j in range(3):
        now = torch.tensor([float(sg[s0 + j]) for s0 in STARTS])
        nxt = torch.tensor([float(sg[s0 + j + 1]) for s0 in STARTS])
        xb = denoise_step(ad, xb, rank * n, PX, PX, now, nxt, cb)
    return torch.cat(alone), xb


@pytest.mark.parametrize("kind", ["tiny-flux", "tiny-sd3"])
def test_batched_step_equals_unbatched_degree_1(kind):
    alone, batched = _run(0, 1, kind)
    assert (alone - batched).abs().max().item() <= 1e-5
    assert (alone[0] - alone[1]).abs().max().item() > 1e-2  # two different requests


def test_batched_step_equals_unbatched_degree_2():
    out = run_ranks(_run, 2, "tiny-flux")
    for alone, batched in out:
        assert (alone - batched).abs().max().item() <= 1e-5

"""End-to-end runtime over real worker processes (gloo on CPU): a request whose steps run at
degree 1, then 2, then 4 must end with the same latent as degree 1 throughout.

Tolerance: fp32 on CPU. Ulysses attention reassembles the full sequence in the original order,
so per-head attention sees identical inputs; the only source of difference is the per-token
GEMMs running on fewer rows (BLAS may block them differently), i.e. a few fp32 ulps per layer.
With |latent| <= ~5 and eight steps that stays below 1e-5 (measured: 0.0 on torch 2.13 CPU);
a real bug (wrong shard order, heads mixed up, local-only attention) moves values by O(1).
"""

import time

import pytest

pytestmark = pytest.mark.runtime
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tetriopt_runtime import GenRequest, ModelSpec, PlanError, Runtime, compile_plan  # noqa: E402
from tetriopt_runtime.png import decode_png_size  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def rt4():
    with Runtime(ModelSpec("tiny-flux"), world_size=4, timeout_s=60) as rt:
        yield rt


@pytest.fixture(scope="module")
def rt2_factory():
    """A 2-worker tiny-SD3 runtime, restarted if a test closed it (worker error)."""
    box = {}

    def get():
        if "rt" not in box or not box["rt"]._procs:
            box["rt"] = Runtime(ModelSpec("tiny-sd3"), world_size=2, timeout_s=30)
        return box["rt"]

    yield get
    if "rt" in box:
        box["rt"].close()


def _max_diff(a, b):
    return max((a.latents[k] - b.latents[k]).abs().max().item() for k in a.latents)


def test_mixed_degrees_match_degree_one(rt4, capsys):
    reqs = [GenRequest("a", "a red fox", 128, 128, 8, seed=3), GenRequest("b", "a lighthouse", 128, 64, 5, seed=4)]
    ref = rt4.generate(reqs, [[("a", (0,), 8), ("b", (3,), 5)]])
    mixed = rt4.generate(reqs, [
        [("a", (1,), 3), ("b", (2, 3), 2)],  # degree 1 for a; b starts at degree 2
        [("a", (2, 3), 3), ("b", (0,), 1)],  # a: degree 2 on another set; b drops to 1
        [("a", (0, 1, 2, 3), 2)],            # a: degree 4 for the rest
        [("b", (0, 1, 2, 3), 2)],
    ])
    err = _max_diff(ref, mixed)
    with capsys.disabled():
        print(f"\n[runtime] degree 1->2->4 vs 1: max |latent diff| = {err:.3g} "
              f"(|latent| max {ref.latents['a'].abs().max().item():.2f})")
    assert err <= TOL
    noise = rt4.noise(128, 128, 3)
    assert (ref.latents["a"] - noise).abs().max().item() > 0.1  # the steps did change the latent
    for k, r in {"a": (128, 128), "b": (128, 64)}.items():
        assert decode_png_size(mixed.images[k]) == r
    degrees = {k: [len(t["gpus"]) for t in mixed.timings if t["request"] == k] for k in "ab"}
    assert degrees == {"a": [1, 2, 4], "b": [2, 1, 4]}


def test_handoffs_crossing_in_both_orders(rt4):
    """Rank 0 finishes x before y but rank 1 needs y first; conditioning returns to a rank that
    already holds it. Sends are matched to receives by global order, so nothing mixes up."""
    reqs = [GenRequest("x", "one", 64, 64, 4, seed=1), GenRequest("y", "two", 64, 64, 4, seed=2)]
    ref = rt4.generate(reqs, [[("x", (0,), 4), ("y", (1,), 4)]])
    got = rt4.generate(reqs, [
        [("x", (0,), 1), ("y", (0,), 1)],
        [("y", (1,), 1)],
        [("x", (1,), 1), ("y", (0,), 1)],
        [("x", (0,), 1), ("y", (2, 3), 1)],
        [("x", (0, 1), 1)],
    ])
    assert _max_diff(ref, got) <= TOL


def test_same_prompt_same_image_other_prompt_differs(rt4):
    r1 = rt4.generate([GenRequest("p", "a boat", 64, 64, 2, seed=7)], [[("p", (0, 1), 2)]])
    r2 = rt4.generate([GenRequest("p", "a boat", 64, 64, 2, seed=7)], [[("p", (2,), 2)]])
    r3 = rt4.generate([GenRequest("p", "a car", 64, 64, 2, seed=7)], [[("p", (2,), 2)]])
    assert r1.images["p"] == r2.images["p"]
    assert (r1.latents["p"] - r3.latents["p"]).abs().max().item() > 1e-2
    assert r1.images["p"].startswith(b"\x89PNG")


def test_bad_plan_is_rejected_before_dispatch(rt4):
    req = [GenRequest("a", "x", 64, 64, 2)]
    with pytest.raises(PlanError):
        rt4.generate(req, [[("a", (1, 2), 2)]])
    with pytest.raises(PlanError):
        rt4.generate(req, [[("a", (0,), 1)]])
    assert rt4.generate(req, [[("a", (0,), 2)]]).images["a"]  # still serving


def test_tiny_sd3_mixed_degrees(rt2_factory):
    rt = rt2_factory()
    reqs = [GenRequest("s", "a tree", 128, 128, 6, seed=5)]
    ref = rt.generate(reqs, [[("s", (1,), 6)]])
    got = rt.generate(reqs, [[("s", (0,), 2)], [("s", (0, 1), 2)], [("s", (1,), 1)], [("s", (0, 1), 1)]])
    assert _max_diff(ref, got) <= TOL


def test_unsplittable_size_is_refused_before_dispatch(rt2_factory):
    rt = rt2_factory()
    pids = rt.worker_pids()
    with pytest.raises(PlanError, match="do not split"):
        rt.generate([GenRequest("odd", "x", 48, 16, 2)], [[("odd", (0, 1), 2)]])  # 3 tokens over 2 ranks
    assert rt.worker_pids() == pids and rt.alive()


def test_worker_error_is_reported_not_hung(rt2_factory):
    """A task that raises inside a worker (here the worker's own split check, reached by
    bypassing the driver's) is reported, and the runtime closes instead of hanging."""
    rt = rt2_factory()
    reqs = [GenRequest("odd", "x", 48, 16, 2)]
    tasks = compile_plan([[("odd", (0, 1), 2)]], {"odd": 2}, 2)
    meta, inits, _ = rt._prepare(reqs)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="do not split"):
        rt.run_tasks(tasks, meta, inits, lambda *a: None)
    assert time.monotonic() - t0 < 30
    assert not rt._procs  # closed: its groups may be wedged after a failure


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_cuda_mixed_degrees_match():
    reqs = [GenRequest("g", "a cat", 256, 256, 4, seed=1)]
    with Runtime(ModelSpec("tiny-flux"), world_size=2, device="cuda", timeout_s=120) as rt:
        ref = rt.generate(reqs, [[("g", (0,), 4)]])
        got = rt.generate(reqs, [[("g", (1,), 2)], [("g", (0, 1), 2)]])
    assert _max_diff(ref, got) <= 1e-4  # TF32/cuBLAS choices differ by row count on GPU


def test_aux_on_leaders_equals_aux_in_driver(rt4):
    """Encoding on the first set's leader (shared by broadcast) and decoding on the last set's
    leader give the same images as the aux models in the driver; their times are reported."""
    reqs = [GenRequest("e", "a hill", 64, 64, 3, seed=9)]
    rounds = [[("e", (0, 1), 2)], [("e", (1,), 1)]]
    on_leaders = rt4.generate(reqs, rounds)
    assert on_leaders.encode_ms["e"] > 0 and on_leaders.decode_ms["e"] > 0
    assert [t["encode_ms"] > 0 for t in on_leaders.timings] == [True, False]
    with Runtime(ModelSpec("tiny-flux"), world_size=2, timeout_s=60, aux_device="cpu") as rt:
        assert rt.startup_s > 0 and all("comm_warm_s" in w for w in rt.worker_info)
        in_driver = rt.generate(reqs, rounds)
    assert in_driver.images["e"] == on_leaders.images["e"]
    assert _max_diff(in_driver, on_leaders) == 0.0


def test_decode_and_encode_on_a_leader_hold_its_gpu(rt4):
    """What docs/runtime.md's encode/decode charge rests on: each task reports when it began and
    ended (perf_counter stamps, comparable across workers), a task that finishes a request ends
    after its decode, and the next task on that GPU begins only then, in the plan's order, so the
    decode holds the GPU; and a request's first task on a set includes its leader's encode."""
    reqs = [GenRequest(r, f"a {r}", 64, 64, 2, seed=i) for i, r in enumerate("abc")]
    res = rt4.generate(reqs, [[("a", (0,), 2), ("b", (0, 1), 2), ("c", (0,), 2)]], decode=False)
    t = {d["request"]: d for d in res.timings}
    assert all(d["began_s"] <= d["ended_s"] for d in t.values())
    assert t["a"]["decode_ms"] > 0 and t["a"]["encode_ms"] > 0 and t["b"]["encode_ms"] > 0
    assert t["a"]["ended_s"] <= t["b"]["began_s"] and t["b"]["ended_s"] <= t["c"]["began_s"]

"""Round-by-round executor (what the server drives): latents stay on their sets between calls and
the result equals one whole-plan run at degree 1."""

import pytest

pytestmark = pytest.mark.runtime
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from _plans import urgent_and_wide_plan  # noqa: E402
from tetriopt.plan import Assignment  # noqa: E402
from tetriopt_runtime import GenRequest  # noqa: E402
from tetriopt_runtime.executor import RoundExecutor  # noqa: E402
from tetriopt_runtime.plan import PlanError  # noqa: E402
from tetriopt_runtime.png import decode_png_size  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    e = RoundExecutor(device="cpu", world=2, model="tiny-flux", timeout_s=60)
    yield e
    e.close()


def _round(ex, items, done, *assignments):
    work = {rid: dict(prompt=p, width=w, height=h, total_steps=n, done_steps=done[rid], seed=s)
            for rid, (p, w, h, n, s) in items.items()}
    calls = []
    ex.run_round([Assignment(r, g, k, 0, 0) for r, g, k in assignments], work, lambda a, png: calls.append((a, png)))
    for a, _ in calls:
        done[a.request] += a.steps
    return calls


def test_rounds_keep_latents_and_match_a_whole_plan(ex):
    items = {"a": ("a cat", 128, 64, 5, 1), "b": ("a dog", 64, 64, 3, 2)}
    done = {"a": 0, "b": 0}
    c1 = _round(ex, items, done, ("a", (0,), 2), ("b", (1,), 1))
    assert sorted(a.request for a, _ in c1) == ["a", "b"] and all(png is None for _, png in c1)
    c2 = _round(ex, items, done, ("a", (0, 1), 2), ("b", (0,), 2))
    assert [png is not None for a, png in c2 if a.request == "b"] == [True]
    b_latent = ex.last_latents["b"]
    c3 = _round(ex, items, done, ("a", (1,), 1))
    (a3, png), = c3
    assert decode_png_size(png) == (128, 64)
    ref = ex.runtime.generate([GenRequest("a", "a cat", 128, 64, 5, 1), GenRequest("b", "a dog", 64, 64, 3, 2)],
                              [[("a", (0,), 5), ("b", (1,), 3)]])
    assert (ref.latents["a"] - ex.last_latents["a"]).abs().max().item() <= 1e-5
    assert (ref.latents["b"] - b_latent).abs().max().item() <= 1e-5


def test_out_of_sync_step_counts_are_refused(ex):
    items = {"c": ("x", 64, 64, 4, 0)}
    with pytest.raises(PlanError, match="not on this runtime"):
        _round(ex, items, {"c": 2}, ("c", (0,), 1))
    done = {"c": 0}
    _round(ex, items, done, ("c", (0,), 1))
    with pytest.raises(PlanError, match="holds 1 finished steps"):
        _round(ex, items, {"c": 3}, ("c", (0,), 1))
    calls = _round(ex, items, done, ("c", (0, 1), 3))  # the refusals left the request intact
    assert [png is not None for _, png in calls] == [True]


def test_runtime_runs_the_plans_start_order(ex):
    """Issue 11 defect 1: the scheduler plans the urgent 1-GPU request before the 2-GPU one on
    GPU 0; the runtime must run it first (both are led by rank 0, which reports in run order)."""
    plan = urgent_and_wide_plan()
    work = {"wide": dict(prompt="w", width=64, height=64, total_steps=20, done_steps=0, seed=1),
            "urgent": dict(prompt="u", width=64, height=64, total_steps=2, done_steps=0, seed=2)}
    calls = []
    ex.run_round(list(plan.assignments), work, lambda a, png: calls.append((a.request, png is not None)))
    assert calls == [("urgent", True), ("wide", False)]
    ex.run_round([Assignment("wide", (0, 1), 16, 0, 0)], {**work, "wide": {**work["wide"], "done_steps": 4}},
                 lambda a, png: calls.append((a.request, png is not None)))
    assert calls[-1] == ("wide", True)


def test_a_forgotten_request_is_freed_on_the_driver_and_every_worker(ex):
    """Executor.forget (the engine calls it when the server cancels a job): the next round drops the
    request's checkpoint in the driver and its shard / conditioning on every worker."""
    items = {"f": ("a fox", 64, 64, 6, 3), "g": ("a goat", 64, 64, 2, 4)}
    done = {"f": 0, "g": 0}
    _round(ex, items, done, ("f", (0, 1), 2))
    assert "f" in ex.held and all("f" in held for held in ex.runtime.worker_held.values())
    ex.forget("f")  # from the server's loop thread in real life: applied at the next round
    assert "f" in ex.held
    calls = _round(ex, items, done, ("f", (0, 1), 2), ("g", (0,), 2))  # f was planned before it was cancelled
    assert [a.request for a, _ in calls] == ["g"]
    assert "f" not in ex.held and "f" not in ex.plan.total
    assert ex.runtime.worker_held and not any("f" in held for held in ex.runtime.worker_held.values())

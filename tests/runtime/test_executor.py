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
    ex.run_round([Assignment(r, g, k, 0, 0) for r, g, k in assignments], work, lambda a, png, _: calls.append((a, png)))
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
    ex.run_round(list(plan.assignments), work, lambda a, png, _: calls.append((a.request, png is not None)))
    assert calls == [("urgent", True), ("wide", False)]
    ex.run_round([Assignment("wide", (0, 1), 16, 0, 0)], {**work, "wide": {**work["wide"], "done_steps": 4}},
                 lambda a, png, _: calls.append((a.request, png is not None)))
    assert calls[-1] == ("wide", True)


def test_batched_rounds_equal_unbatched_runs(ex):
    """Issue 13: batched assignments (same-size latents stacked on one set, members at different
    steps, moving between sets, one finishing while the other goes on) end with each request's
    latent equal to its unbatched run within 1e-5 (fp32), and the runtime's reports say they ran
    as batches."""
    items = {"p": ("a red fox", 64, 64, 6, 3), "q": ("a boat", 64, 64, 6, 4)}
    done = {"p": 0, "q": 0}
    work = lambda: {rid: dict(prompt=pr, width=w, height=h, total_steps=n, done_steps=done[rid], seed=s)  # noqa: E731
                    for rid, (pr, w, h, n, s) in items.items()}
    calls = []

    def run(*assignments):
        got = []
        ex.run_round(list(assignments), work(), lambda a, png, images: got.append((a, png, dict(images))))
        for a, _, _ in got:
            for rid in a.requests:
                done[rid] += a.steps
        calls.extend(got)

    n_reports = len(ex.reports)
    run(Assignment("p", (0,), 2, 0, 0), Assignment("q", (1,), 1, 0, 0))
    run(Assignment("p", (0, 1), 3, 0, 0, batch=("q",)))   # both move onto (0, 1); p at step 2, q at 1
    run(Assignment("q", (1,), 1, 0, 0, batch=("p",)))     # p's last step: its PNG comes with q's report
    assert done == {"p": 6, "q": 5}
    a3, png3, images3 = calls[-1]
    assert png3 is None and list(images3) == ["p"] and decode_png_size(images3["p"]) == (64, 64)
    run(Assignment("q", (0,), 1, 0, 0))
    assert calls[-1][1] is not None
    ref = ex.runtime.generate([GenRequest("p", "a red fox", 64, 64, 6, 3), GenRequest("q", "a boat", 64, 64, 6, 4)],
                              [[("p", (0,), 6), ("q", (1,), 6)]])
    for rid in "pq":
        assert (ref.latents[rid] - ex.last_latents[rid]).abs().max().item() <= 1e-5
    assert (ex.last_latents["p"] - ex.last_latents["q"]).abs().max().item() > 1e-2  # two different requests
    batched = [r for r in list(ex.reports)[n_reports:] if r["batch"]]
    assert [(r["request"], r["batch"], r["gpus"]) for r in batched] == [
        ("p", ["p", "q"], [0, 1]), ("q", ["p", "q"], [0, 1]), ("q", ["q", "p"], [1]), ("p", ["q", "p"], [1])]


def test_a_batch_with_a_refused_member_is_refused_whole(ex):
    """Progress that disagrees for one member: the whole batched assignment is refused (it cannot
    run as planned) and named for every member; the requests stay runnable."""
    work = {rid: dict(prompt=rid, width=64, height=64, total_steps=2, done_steps=d, seed=1)
            for rid, d in (("u", 0), ("v", 1))}
    failed: dict[str, str] = {}
    ex.run_round([Assignment("u", (0,), 1, 0, 0, batch=("v",))], work, lambda *a: None,
                 lambda a, why: failed.update({r: why for r in a.requests}))
    assert set(failed) == {"u", "v"} and "not on this runtime" in failed["u"], failed
    calls = []
    ex.run_round([Assignment("u", (0,), 2, 0, 0, batch=("v",))], {**work, "v": {**work["v"], "done_steps": 0}},
                 lambda a, png, images: calls.append((png is not None, dict(images).keys())))
    assert calls == [(True, {"v"})]


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

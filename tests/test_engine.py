"""The round engine with a fake executor: completions, failures and re-queueing, late plans."""

from __future__ import annotations

import pytest

import tetriopt
from tetriopt.engine import Completion, ExecutorFailure, InvalidPlan, RoundEngine, Tracked, VirtualClock
from tetriopt.plan import Assignment, RoundPlan, make_plan
from tetriopt.validate import validate_result
from tetriopt.workload import generate

PROF = tetriopt.load_profile("flux.1-dev-h100")
R = 900_000


class FakeExecutor:
    """Reports each assignment at its planned end (encode / decode included), in start order; may break
    after `fail_after` reports."""

    name = "fake"
    concurrent_rounds = True

    def __init__(self, fail_after: int | None = None, resumable: bool = True):
        self.fail_after = fail_after
        self.resumable = resumable
        self.plans: list[RoundPlan] = []
        self.work: list[dict] = []

    def start(self, clock) -> None:
        pass

    def execute(self, plan, work, round_index, on_complete) -> None:
        self.plans.append(plan)
        self.work.append(dict(work))
        for i, a in enumerate(sorted(plan.assignments, key=lambda a: a.start_us)):
            if self.fail_after is not None and i >= self.fail_after:
                raise ExecutorFailure(f"fake crash in round {round_index}")
            on_complete(Completion(a, a.end_us))  # a finishing assignment's duration holds its decode

    def close(self) -> None:
        pass


def engine(executor=None) -> RoundEngine:
    return RoundEngine(cluster=tetriopt.make_cluster(4), profile=PROF, degrees=(1, 2, 4), round_us=R,
                       executor=executor, clock=VirtualClock())


def req(rid: str, steps: int = 10, size: int = 512, deadline: int = 10_000_000, arrival: int = 0) -> Tracked:
    return Tracked(id=rid, width=size, height=size, steps=steps, arrival_us=arrival, deadline_us=deadline)


def fixed(decisions):
    """A plan function that runs the given (request, gpus, steps) in every round, where still pending."""
    def plan(state):
        live = {r.id: r for r in state.requests}
        return make_plan(state, [(i, g, min(n, live[i].remaining_steps)) for i, g, n in decisions if i in live],
                         backend="test")
    return plan


def test_round_completes_requests_and_tracks_progress():
    ex = FakeExecutor()
    e = engine(ex)
    e.submit(req("a", steps=3))
    e.submit(req("b", steps=10))
    run = e.run_round(fixed([("a", (0,), 3), ("b", (2, 3), 2)]), 0, 0)
    assert [t.id for t in run.finished] == ["a"]
    a = run.finished[0]
    step = PROF.step_us(512, 512, 1)
    assert a.finish_us == 3 * step + PROF.text_encode_us + PROF.vae_decode_us(512, 512) and a.finished
    b = e.pending["b"]
    assert (b.done, b.inflight, b.location) == (2, 0, (2, 3))
    assert list(e.pending) == ["b"]
    assert ex.work[0]["b"].done_steps == 0 and ex.work[0]["b"].total_steps == 10
    # the next round sees b's remaining steps, on the GPUs that hold its latent
    state = e.snapshot(R, 1)
    assert [(r.id, r.remaining_steps, r.location) for r in state.requests] == [("b", 8, (2, 3))]


def test_requests_arriving_after_the_cutoff_wait_for_the_next_round():
    e = engine()
    e.submit(req("early", arrival=0))
    e.submit(req("late", arrival=R + 1))
    assert [r.id for r in e.snapshot(R, 1).requests] == ["early"]
    assert [r.id for r in e.snapshot(2 * R, 2).requests] == ["early", "late"]


def test_failure_requeues_unreported_steps():
    ex = FakeExecutor(fail_after=1)
    e = engine(ex)
    e.submit(req("a", steps=10))
    e.submit(req("b", steps=10))
    with pytest.raises(ExecutorFailure):
        e.run_round(fixed([("a", (0,), 2), ("b", (1,), 4)]), 0, 0)
    a, b = e.pending["a"], e.pending["b"]
    assert (a.done, a.inflight, a.location) == (2, 0, (0,))  # reported before the crash: it stands
    assert (b.done, b.inflight, b.location, b.planned_location) == (0, 0, (), ())  # lost: all back
    state = e.snapshot(R, 1)
    assert {r.id: r.remaining_steps for r in state.requests} == {"a": 8, "b": 10}


def test_failure_of_a_non_resumable_executor_restarts_started_requests():
    ex = FakeExecutor(fail_after=1, resumable=False)
    e = engine(ex)
    e.submit(req("a", steps=10))
    e.submit(req("b", steps=10))
    with pytest.raises(ExecutorFailure):
        e.run_round(fixed([("a", (0,), 2), ("b", (1,), 4)]), 0, 0)
    assert {t.id: (t.done, t.location) for t in e.pending.values()} == {"a": (0, ()), "b": (0, ())}
    assert e.fail([], resumable=True) == 0  # nothing more to give back


def test_plan_for_the_next_round_counts_steps_in_flight():
    """The server plans round k+1 before round k reports: its snapshot counts in-flight steps as done."""
    e = engine()
    e.submit(req("a", steps=10))
    s0 = e.snapshot(0, 0)
    plan0, work0 = e.dispatch(s0, fixed([("a", (0, 1), 4)])(s0))
    s1 = e.snapshot(R, 1)
    assert [(r.remaining_steps, r.location) for r in s1.requests] == [(6, (0, 1))]
    assert e.pending["a"].location == ()  # nothing confirmed yet
    plan1, work1 = e.dispatch(s1, fixed([("a", (0, 1), 4)])(s1))
    assert work1["a"].done_steps == 4  # the executor of round 1 starts where round 0 will end
    for p in (plan0, plan1):
        for a in p.assignments:
            assert e.apply(Completion(a, a.end_us)) is None
    assert (e.pending["a"].done, e.pending["a"].inflight) == (8, 0)


def test_plan_arriving_after_a_cancellation_skips_the_dropped_request():
    e = engine()
    e.submit(req("a"))
    e.submit(req("b"))
    s = e.snapshot(0, 0)
    plan = fixed([("a", (0,), 2), ("b", (1,), 2)])(s)
    assert e.drop("b") is not None
    live, work = e.dispatch(s, plan)
    assert [a.request for a in live.assignments] == ["a"] and set(work) == {"a"}
    # a report for a request cancelled while its round ran is ignored
    ghost = Assignment("b", (1,), 2, 0, 2 * PROF.step_us(512, 512, 1))
    assert e.apply(Completion(ghost, ghost.end_us)) is None and "b" not in e.pending


def test_invalid_plan_is_refused_before_anything_is_in_flight():
    e = engine(FakeExecutor())
    e.submit(req("a", steps=3))
    step = PROF.step_us(512, 512, 1)
    bad = RoundPlan(assignments=(Assignment("a", (0,), 5, 0, 5 * step),), backend="test")  # 5 of 3 steps
    with pytest.raises(InvalidPlan, match="5 steps, 3 remaining"):
        e.run_round(lambda state: bad, 0, 0)
    assert (e.pending["a"].inflight, e.pending["a"].done) == (0, 0)


def test_submitting_twice_is_an_error():
    e = engine()
    e.submit(req("a"))
    with pytest.raises(ValueError, match="twice"):
        e.submit(req("a"))


@pytest.mark.slow
def test_mip_fallback_under_backlog_never_assigns_a_request_twice():
    """Regression: `tetriopt workload --gpus 8 -n 320 --rate 142.2 --seed 0` then `solve --time-limit-ms 1`
    crashed: the heuristic plan that answered for the model already held requests outside the placed
    core, and the leftover fill assigned them again (same round, overlapping)."""
    inst = tetriopt.parse_instance(generate("flux.1-dev-h100", 8, 320, 142.2, seed=0), name="backlog")
    res = tetriopt.solve(inst, "cpsat", time_limit_ms=1, deterministic=True)
    assert validate_result(inst, res.to_json()) == []
    per_round: dict[tuple[int, str], int] = {}
    for rd, a in res.assignments:
        per_round[rd, a.request] = per_round.get((rd, a.request), 0) + 1
    assert max(per_round.values()) == 1


def test_a_request_split_over_two_sets_in_one_round_finishes_once_on_the_sim_executor():
    """Several assignments of one request in a round (batching, immediate starts): the sim executor
    runs them one after the other, the first carrying the encode and only the last the decode; the
    engine finishes it once."""
    from tetriopt.server.executors.sim import SimExecutor

    clock = VirtualClock()
    ex = SimExecutor(gpus=4, profile=PROF, images=False)
    ex.start(clock)
    e = engine(ex)
    e.clock = clock
    e.submit(req("a", steps=5))
    t1, t2 = PROF.step_us(512, 512, 1), PROF.step_us(512, 512, 2)
    enc, dec = PROF.text_encode_us, PROF.vae_decode_us(512, 512)
    split = RoundPlan(assignments=(Assignment("a", (0,), 2, 0, 2 * t1 + enc),
                                   Assignment("a", (2, 3), 3, 2 * t1 + enc, 2 * t1 + enc + 3 * t2 + dec)),
                      backend="test")
    run = e.run_round(lambda state: split, 0, 0)
    assert [t.id for t in run.finished] == ["a"] and not e.pending
    assert run.finished[0].finish_us == 2 * t1 + enc + 3 * t2 + dec
    assert run.finished[0].location == (2, 3)


def test_dropping_a_request_tells_the_executor_to_forget_it():
    class Forgetful(FakeExecutor):
        def __init__(self):
            super().__init__()
            self.forgotten = []

        def forget(self, rid):
            self.forgotten.append(rid)

    ex = Forgetful()
    e = engine(ex)
    e.submit(req("a"))
    e.run_round(fixed([("a", (0,), 2)]), 0, 0)
    assert e.drop("a") is not None and ex.forgotten == ["a"] and not e.pending
    assert engine(FakeExecutor()).drop("zz") is None  # an executor without the hook: nothing to call

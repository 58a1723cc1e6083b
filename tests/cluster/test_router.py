"""Routers on hand-built node states: who goes where, and when nobody can take a request."""

from __future__ import annotations

import pytest

from tetriopt import RequestState, RoundState, load_profile, make_cluster
from tetriopt.cluster.router import DeadlineAware, LeastWork, NodeView, RoundRobin, committed_us, joint_slack, make_router
from tetriopt.errors import InputError

PROF = load_profile("flux.1-dev-h100")
R = PROF.default_round_us
NOW = 10 * R


def req(rid: str, size: int = 1024, steps: int = 20, slo_s: float = 6.0, loc=()) -> RequestState:
    return RequestState(id=rid, width=size, height=size, remaining_steps=steps, deadline_us=NOW + int(slo_s * 1e6),
                        arrival_us=NOW, location=tuple(loc))


def node(i: int, *reqs: RequestState, gpus: int = 8, alive: bool = True) -> NodeView:
    st = RoundState(now_us=NOW, round_us=R, cluster=make_cluster(gpus), profile=PROF, degrees=(1, 2, 4, 8),
                    requests=tuple(reqs))
    return NodeView(i, st, alive)


def test_round_robin_cycles_over_live_nodes_only():
    rr = RoundRobin()
    nodes = [node(0), node(1, alive=False), node(2)]
    assert [rr.route(req(f"x{i}"), nodes) for i in range(4)] == [0, 2, 0, 2]
    assert rr.route(req("y"), [node(0, alive=False)]) is None


def test_least_work_counts_steps_times_cheapest_gpu_time():
    busy = node(0, req("a", 2048), req("b", 1024))
    light = node(1, req("c", 256))
    assert committed_us(busy.state) > committed_us(light.state) > 0
    assert LeastWork().route(req("new"), [busy, light]) == 1
    assert LeastWork().route(req("new"), [busy, node(1, alive=False)]) == 0


def test_deadline_aware_takes_the_node_with_most_slack():
    # the newcomer is due after what each node holds: its prefix carries that node's work
    da = DeadlineAware()
    nodes = [node(0, req("a", 2048, slo_s=5)), node(1, req("b", 512, slo_s=5)), node(2, req("c", 1024, slo_s=5))]
    new = req("new", 1024, slo_s=8)
    slacks = [da.slack(new, n) for n in nodes]
    assert None not in slacks and len(set(slacks)) == 3
    assert da.route(new, nodes) == max(range(3), key=lambda i: slacks[i]) == 1


def test_deadline_aware_never_pushes_a_kept_request_out():
    # one GPU: 20 steps of 1024 px take 3.1 s of it (3.5 s in rounds); each request alone meets
    # its deadline, but the newcomer (due first) would push the kept one past its own
    kept = req("kept", 1024, steps=20, slo_s=4.5)
    n = node(0, kept, gpus=1)
    alone = node(1, gpus=1)
    newcomer = req("new", 1024, steps=20, slo_s=4.2)
    assert joint_slack(alone.with_request(newcomer).state, "new") is not None
    assert joint_slack(n.with_request(newcomer).state, "new") is None
    assert DeadlineAware().route(newcomer, [n, alone]) == 1
    assert DeadlineAware().route(newcomer, [n]) is None


def test_deadline_aware_rejects_what_no_node_can_keep():
    impossible = req("late", 2048, steps=20, slo_s=0.5)
    assert DeadlineAware().route(impossible, [node(0), node(1)]) is None
    assert DeadlineAware().route(req("ok"), [node(0, alive=False), node(1)]) == 1


def test_moves_only_not_started_requests_a_node_gives_up():
    # node 0 (one GPU) holds three equal requests that have not started and one that has; its
    # joint test keeps one. Of those it gives up, one moves to the idle node 1 (which can keep
    # one); the started one stays whatever happens to it.
    reqs = [req(f"r{i}", 1024, steps=20, slo_s=4.5) for i in range(3)] + [req("s", 1024, steps=20, slo_s=4.6, loc=(0,))]
    moves = DeadlineAware().moves([node(0, *reqs, gpus=1), node(1, gpus=1)])
    assert [(m.request, m.src, m.dst) for m in moves] == [("r1", 0, 1)]
    started = [req("r0", 1024, steps=20, slo_s=4.5), req("s", 1024, steps=20, slo_s=4.6, loc=(0,))]
    assert DeadlineAware().moves([node(0, *started, gpus=1), node(1, gpus=1)]) == []
    not_started = [started[0], req("s", 1024, steps=20, slo_s=4.6)]
    assert len(DeadlineAware().moves([node(0, *not_started, gpus=1), node(1, gpus=1)])) == 1
    assert RoundRobin().moves([node(0, *reqs, gpus=1), node(1, gpus=1)]) == []


def test_unknown_router_is_one_clear_error():
    with pytest.raises(InputError, match="router.*bogus"):
        make_router("bogus")

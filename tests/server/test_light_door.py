"""At light load the door leaves keep or give-up to the planner, as `tetriopt solve` does (every
arrival reaches its policy there): a request that can meet its deadline alone is admitted where
the fluid tests (the joint test, the ideal one, the foresight's forward schedule) refuse it.
Under load (busy), while settling, or with `--no-admission-light-door`, those tests decide."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from tetriopt.server.admission import Foresight, JointAdmission, foresee_met

from serverkit import BASE, ServerThread

pytestmark = pytest.mark.server

# fast-test profile, 4 GPUs, 300 ms rounds. From the first boundary after both arrive: P, 200 steps of
# 1024x1024 due in 2.19-2.25 s; N, 80 steps due in 0.87-0.93 s (37 steps a round at 4 GPUs: it finishes
# alone in 652 ms). The joint test and the foresight refuse N beside P (the fluid tests charge its
# rounds' tails); CP-SAT's forward schedule meets both (test_the_fluid_tests_refuse_what_the_planner_fits).
ROUND_MS, P_STEPS, P_SLO_MS, N_SLO_MS = 300, 200, 2485, 1165


def _send_pair(srv: ServerThread, c: httpx.Client, *, settled: bool = True, busy: bool = False) -> httpx.Response:
    """P then N early in a round (far from the next boundary's lead); N's response. On a machine too
    busy to send both before that lead, both are cancelled and the pair is sent again a round later."""
    svc = srv.service
    R = svc.timing.round_us
    if settled:  # 10 s of offers seen, none of them work: light load
        svc.foresight.offered(svc.clock.now_us() - 11_000_000, 0)
    if busy:  # more work offered than the cluster does in 10 s
        svc.foresight.offered(svc.clock.now_us(), 4 * 11_000_000)
    for _ in range(5):
        b = (svc.clock.now_us() // R + 2) * R
        svc.clock.sleep_until(b + 5_000)
        p = c.post("/v1/jobs", json={"prompt": "p", "size": "1024x1024", "steps": P_STEPS, "slo_ms": P_SLO_MS})
        assert p.status_code == 202, p.text
        n = c.post("/v1/jobs", json={"prompt": "n", "size": "1024x1024", "steps": 80, "slo_ms": N_SLO_MS})
        if svc.clock.now_us() < b + R - svc.timing.lead_us:
            return n
        for j in (p, n):
            if j.status_code == 202:
                c.delete(f"/v1/jobs/{j.json()['id']}")
        svc.scheduler.deadlines.released.clear()
    raise AssertionError("could not send the pair within a round's first part in 5 tries")


def test_the_fluid_tests_refuse_what_the_planner_fits():
    from tetriopt.instance import make_cluster
    from tetriopt.profile import load_profile
    from tetriopt.state import RequestState, RoundState

    from serverkit import FAST_PROFILE

    R = ROUND_MS * 1000
    for shift in (0, 30_000, 60_000):  # the boundary up to 60 ms after the pair's arrival
        p = RequestState(id="P", width=1024, height=1024, remaining_steps=P_STEPS, deadline_us=2_250_000 - shift)
        n = RequestState(id="N", width=1024, height=1024, remaining_steps=80, deadline_us=930_000 - shift)
        st = RoundState(now_us=0, round_us=R, cluster=make_cluster(4), profile=load_profile(FAST_PROFILE),
                        degrees=(1, 2, 4), requests=(p,))
        assert not JointAdmission(0.7).check(st, (n,)).ok
        fs = Foresight()
        fs.offered(-11_000_000, 0)
        assert fs.refuses(st, (n,), 0) is not None
        assert fs.light(st, (n,), 0)
        assert foresee_met(replace(st, requests=(p, n)), "cpsat") == {"P", "N"}


def test_at_light_load_the_door_leaves_the_request_to_the_planner():
    with ServerThread(replace(BASE, round_ms=ROUND_MS)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        n = _send_pair(srv, c)
        assert n.status_code == 202, n.text
        # planned to its own deadline less the dispatch margin (no band), late requests to their own
        # deadline: as the offline solve plans them
        deadlines = srv.service.scheduler.deadlines
        assert deadlines.light()
        svc, rid = srv.service, n.json()["id"] + ".0"
        task = svc.scheduler.engine.pending[rid]  # 80 steps: pending for 3 rounds at least
        (seen,) = [r for r in svc.scheduler.pending_state(svc.clock.now_us()).requests if r.id == rid]
        assert seen.deadline_us == task.deadline_us - 25_000


@pytest.mark.parametrize("how", ["off", "busy", "settling"])
def test_under_load_or_switched_off_the_fluid_tests_decide(how):
    cfg = replace(BASE, round_ms=ROUND_MS, admission_light_door=how != "off")
    with ServerThread(cfg) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        n = _send_pair(srv, c, settled=how != "settling", busy=how == "busy")
        assert n.status_code == 429 and n.json()["error"]["code"] == "deadline_overloaded", n.text
        light = srv.service.scheduler.deadlines.light
        assert light is None if how == "off" else not light()

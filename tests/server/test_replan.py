"""A request arriving in a round's lead, after its snapshot, is planned with the round by the policy
(the loop plans again while time is left), not only put on the GPU time the first plan left free."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import pytest

from serverkit import BASE, ServerThread, wait_job

pytestmark = pytest.mark.server


def test_a_request_arriving_in_the_lead_is_planned_with_its_round():
    with ServerThread(replace(BASE, round_ms=3000)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        svc = srv.service
        R, lead = svc.timing.round_us, svc.timing.lead_us
        b = (svc.clock.now_us() // R + 2) * R          # a boundary whose lead has not begun yet
        svc.clock.sleep_until(b - lead + 150_000)      # its (empty) snapshot is taken: we are in its lead
        jid = c.post("/v1/jobs", json={"prompt": "p", "size": "512x512", "steps": 4, "slo_ms": 60000}).json()["id"]
        assert svc.clock.now_us() < b - 100_000
        assert wait_job(c, jid)["status"] == "succeeded"
        (r,) = [r for r in c.get("/v1/schedule").json()["rounds"] if r["start_us"] == b]
        assert r["backend"] != "none" and r["pending"] == 1      # planned by the policy, not late-filled
        assert [a["job"] for a in r["assignments"]] == [jid] and r["assignments"][0]["start_us"] == b

"""`tetriopt serve --ray` on a 3-node Ray cluster: spread, a node killed mid-load, rejoin, drain.

The tests run in file order on one cluster and one front-end (starting them costs ~30 s):
the drain test stops the front-end and comes last.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tetriopt.cluster.testbed import wait_jobs

from .conftest import NODE_ARGS

pytestmark = pytest.mark.ray


def submit(c: httpx.Client, n: int, **body) -> list[str]:
    ids = []
    for _ in range(n):
        r = c.post("/v1/jobs", json={"prompt": "a lighthouse", **body})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def wait_all(c: httpx.Client, ids: list[str], timeout: float = 180) -> dict[str, dict]:
    out = wait_jobs(c, ids, timeout)
    assert len(out) == len(ids), f"{len(ids) - len(out)} jobs unfinished after {timeout} s"
    return out


def cluster_view(c: httpx.Client) -> dict:
    return c.get("/v1/cluster").json()


def test_requests_spread_over_the_node_actors(front):
    with httpx.Client(base_url=front.url, timeout=60) as c:
        # an OpenAI-style synchronous request goes through a node too
        r = c.post("/v1/images/generations", json={"prompt": "x", "size": "256x256", "slo_ms": 5000})
        assert r.status_code == 200, r.text
        assert r.json()["data"][0]["b64_json"]
        sync_id = r.json()["tetriopt"]["job_id"]
        ids = submit(c, 30, size="1024x1024", steps=16, slo_ms=4000)
        done = wait_all(c, ids)
        assert all(b["status"] == "succeeded" for b in done.values())
        view = cluster_view(c)
        assert len({n["ray_node"] for n in view["nodes"]}) == 3, "one actor per Ray node"
        routed = [n["routed"] for n in view["nodes"]]
        assert sum(routed) == 31 and min(routed) >= 3, routed
        # the dashboard's schedule: every node's rounds, node i's GPUs drawn as 4i..4i+3
        sched = c.get("/v1/schedule").json()
        assert sched["gpus"] == 12 and len(sched["nodes"]) == 3
        used = {g for r in sched["rounds"] for a in r["assignments"] for g in a["gpus"]}
        assert {g // 4 for g in used} == {0, 1, 2}
        jobs = {a["job"] for r in sched["rounds"] for a in r["assignments"]}
        assert jobs and jobs <= set(ids) | {sync_id}, "the rounds name the front-end's job ids"
        metrics = c.get("/metrics").text
        for i in range(3):
            assert f'tetriopt_node_up{{node="{i}"}} 1.0' in metrics
            assert f'tetriopt_node_routed_total{{node="{i}"}} {float(routed[i])}' in metrics


def test_node_killed_mid_load_loses_and_duplicates_nothing_and_comes_back(front, ray_cluster):
    cluster, workers = ray_cluster
    with httpx.Client(base_url=front.url, timeout=60) as c:
        # 20 steps of 1024 px at degree 4 = 160 ms of work each, arriving together: a backlog
        ids = submit(c, 45, size="1024x1024", steps=20, slo_ms=30000)
        # progress reaches the front-end while jobs run (from the nodes' reports)
        t0 = time.monotonic()
        while not any(0 < c.get(f"/v1/jobs/{j}").json()["steps_done"] < 20 for j in ids):
            assert time.monotonic() - t0 < 60, "no job ever reported partial progress"
            time.sleep(0.02)
        view = cluster_view(c)
        victim = max(view["nodes"], key=lambda n: n["unfinished_jobs"])
        assert victim["unfinished_jobs"] > 0, view
        worker = next(w for w in workers if w.node_id == victim["ray_node"])
        cluster.remove_node(worker)
        workers.remove(worker)
        assert c.get("/readyz").status_code == 200  # the front-end keeps serving
        done = wait_all(c, ids)
        assert sorted(done) == sorted(ids)
        assert [b["status"] for b in done.values()].count("succeeded") == len(ids)
        assert all(b["images_done"] == b["n"] == 1 for b in done.values())
        view = cluster_view(c)
        assert view["rerouted"] >= 1 and view["duplicate_results"] == 0, view
        assert not next(n for n in view["nodes"] if n["index"] == victim["index"])["up"]
        # a node comes back: Ray restarts the actor there, the front-end sees a new incarnation
        workers.append(cluster.add_node(**NODE_ARGS))
        t0 = time.monotonic()
        while not all(n["up"] for n in cluster_view(c)["nodes"]):
            assert time.monotonic() - t0 < 120, cluster_view(c)
            time.sleep(0.2)
        back = next(n for n in cluster_view(c)["nodes"] if n["index"] == victim["index"])
        assert back["incarnation"] != victim["incarnation"] and back["ray_node"] == workers[-1].node_id, back
        before = back["routed"]
        more = submit(c, 12, size="1024x1024", steps=16, slo_ms=4000)
        assert all(b["status"] == "succeeded" for b in wait_all(c, more).values())
        after = next(n for n in cluster_view(c)["nodes"] if n["index"] == victim["index"])["routed"]
        assert after > before, ("the node that came back takes work again", cluster_view(c))


def test_drain_finishes_accepted_jobs_and_refuses_new_ones(front):
    with httpx.Client(base_url=front.url, timeout=60) as c:
        ids = submit(c, 9, size="1024x1024", steps=20, slo_ms=30000)
        front.server.handle_exit(signal.SIGTERM, None)
        t0 = time.monotonic()
        while c.get("/readyz").status_code != 503:
            assert time.monotonic() - t0 < 10
            time.sleep(0.02)
        r = c.post("/v1/jobs", json={"prompt": "late"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        done = wait_all(c, ids)
        assert all(b["status"] == "succeeded" for b in done.values())
    front.thread.join(timeout=60)
    assert not front.thread.is_alive(), "the server exits once the drained results are fetched"

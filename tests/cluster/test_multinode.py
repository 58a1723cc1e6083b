"""K nodes in one simulated clock: valid plans of the global cluster, routing that matters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tetriopt.cluster.multinode import global_instance, run_routed, simulate_cluster
from tetriopt.errors import InputError
from tetriopt.instance import parse_instance
from tetriopt.validate import validate_result
from tetriopt.workload import generate


def workload(nodes: int = 4, n: int = 80, rate: float = 150, mix: str = "skewed", seed: int = 3):
    data = generate("flux.1-dev-h100", 8, n, rate, mix=mix, slo_scale=1.0, seed=seed)
    data["cluster"]["nodes"] = nodes
    return parse_instance(data, name="mn")


def test_global_instance_keeps_sets_inside_nodes():
    g = global_instance(workload(nodes=4), 4)
    assert g.cluster.gpus == 32 and g.nodes == 1
    for k in g.degrees:
        for s in g.cluster.sets(k):
            assert len({x // 8 for x in s}) == 1, f"set {s} crosses a node"


@pytest.mark.parametrize("router", ["round-robin", "least-work", "deadline-aware", "global"])
def test_every_router_gives_a_valid_plan_of_the_whole_cluster(router):
    inst = workload()
    run = run_routed(inst, 4, "greedy", router)
    res = run.result
    assert validate_result(res.instance, res.to_json()) == []
    assert sorted(o.id for o in res.requests) == sorted(r.id for r in inst.requests)
    if router != "global":
        assert sum(run.routed) == len(inst.requests)
        assert min(run.routed) > 0  # every node got work at this load


def test_routing_by_deadline_beats_blind_routing_under_load():
    inst = workload(nodes=4, n=120, rate=120)
    met = {r: run_routed(inst, 4, "greedy", r).result.summary["met"] for r in ("round-robin", "deadline-aware")}
    assert met["deadline-aware"] > met["round-robin"], met


def test_deadline_aware_counts_requests_nobody_can_keep():
    inst = workload(nodes=2, n=120, rate=600)
    run = simulate_cluster(inst, 2, "deadline-aware", "greedy")
    assert run.rejected > 0  # at 600/min on 16 GPUs some requests cannot be kept anywhere
    assert run.summary["requests"] == 120  # they still ran, best effort


def test_nodes_field_is_validated():
    data = generate("flux.1-dev-h100", 8, 3, 12, seed=0)
    data["cluster"]["nodes"] = 0
    with pytest.raises(InputError, match="cluster.nodes"):
        parse_instance(data)


def test_cli_solve_with_nodes(tmp_path):
    data = generate("flux.1-dev-h100", 4, 20, 60, seed=1)
    data["cluster"]["nodes"] = 2
    p = tmp_path / "two.json"
    p.write_text(json.dumps(data))
    cli = [sys.executable, "-m", "tetriopt.cli", "solve", str(p), "--policy", "greedy", "--json", "-"]
    out = json.loads(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)
    assert out["cluster"]["nodes"] == 2 and out["cluster"]["router"] == "deadline-aware"
    assert {g for a in out["assignments"] for g in a["gpus"]} - set(range(4)), "node 1's GPUs are 4..7"
    bad = subprocess.run(cli + ["--router", "bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "bogus" in bad.stderr


def test_bench_rows_for_routers_on_the_same_workload():
    from tetriopt import bench as B

    pts = B.points(gpus=4, rates=(120.0,), n=30, seeds=(0,), nodes=3)
    rows = B.run(pts, ["greedy@deadline-aware", "greedy@global"], bound=False)
    assert [r["policy"] for r in rows] == ["greedy@deadline-aware", "greedy@global"]
    assert all(r["requests"] == 30 and "error" not in r for r in rows)
    assert rows[0]["instance"] == rows[1]["instance"] and "3x4g" in rows[0]["instance"]
    assert {"rejected", "infeasible", "moved", "decision_ms_p99"} <= set(rows[0])
    with pytest.raises(InputError, match="router"):
        B.run(pts, ["greedy@nowhere"], bound=False)


@pytest.mark.parametrize("router", ["deadline-aware", "global"])
def test_batching_runs_on_several_nodes(router):
    """Issue 13 on --nodes: every node's policy may batch same-size requests (SD3 on the H200
    profile, launch-bound: batches pay off under load); the whole plan stays valid."""
    data = generate("sd3-medium-h200", 4, 60, 900, mix="uniform", slo_scale=1.0, seed=2)
    inst = parse_instance(data, name="mnb")
    res = run_routed(inst, 2, "greedy", router, batching=True).result
    assert validate_result(res.instance, res.to_json()) == []
    assert any(a.batch for _, a in res.assignments)
    assert sorted(o.id for o in res.requests) == sorted(r.id for r in inst.requests)


def test_bench_batching_and_immediate_starts_on_nodes():
    from tetriopt import bench as B

    pts = B.points(models=("sd3-medium-h200",), gpus=4, rates=(900.0,), n=30, seeds=(0,), nodes=2)
    rows = B.run(pts, ["greedy+batching+immediate@deadline-aware"], bound=False)
    assert rows[0]["requests"] == 30 and "error" not in rows[0]


def two_nodes_data(with_b: bool) -> dict:
    """Two nodes of 2 GPUs: a (FLUX 1024 px, 28 steps) fills one node's round, c (3 steps) ends
    early in the other's; b (256 px, 28 steps) arrives at 450 ms with a deadline that needs it to
    start before the 900 ms boundary (28 x 40 ms + decode > 1950 - 900)."""
    reqs = [{"id": "a", "arrival_ms": 0, "deadline_ms": 30000, "width": 1024, "height": 1024, "steps": 28},
            {"id": "c", "arrival_ms": 0, "deadline_ms": 30000, "width": 1024, "height": 1024, "steps": 3}]
    if with_b:
        reqs.append({"id": "b", "arrival_ms": 450, "deadline_ms": 1950, "width": 256, "height": 256, "steps": 28})
    return {"model": "flux.1-dev-h100", "cluster": {"gpus": 2, "nodes": 2}, "round_ms": 900, "requests": reqs}


def two_nodes(with_b: bool):
    return parse_instance(two_nodes_data(with_b), name="imm")


@pytest.mark.parametrize("router", ["deadline-aware", "least-work", "global"])
def test_immediate_start_on_a_node_with_idle_gpus(router):
    """Issue 13 on --nodes: a mid-round arrival starts at its arrival on GPUs its node's round
    leaves idle (not at the next boundary), and what the round committed for others is unchanged."""
    opts = dict(time_limit_ms=100, deterministic=True)
    late = run_routed(two_nodes(True), 2, "cpsat", router, immediate_start=False, **opts).result
    assert not next(o for o in late.requests if o.id == "b").met  # waits for the boundary: too late
    res = run_routed(two_nodes(True), 2, "cpsat", router, immediate_start=True, **opts).result
    assert validate_result(res.instance, res.to_json()) == []  # no GPU runs two things at once
    first = min((a for _, a in res.assignments if "b" in a.requests), key=lambda a: a.start_us)
    assert first.immediate and first.start_us == 450_000
    assert next(o for o in res.requests if o.id == "b").met
    alone = run_routed(two_nodes(False), 2, "cpsat", router, immediate_start=True, **opts).result
    committed = lambda r: sorted((a.request, a.gpus, a.steps, a.start_us, a.end_us)  # noqa: E731
                                 for k, a in r.assignments if k == 0 and "b" not in a.requests)
    assert committed(res) == committed(alone)


def test_cli_immediate_starts_on_nodes(tmp_path):
    p = tmp_path / "imm.json"
    p.write_text(json.dumps(two_nodes_data(True)))
    cli = [sys.executable, "-m", "tetriopt.cli", "solve", str(p), "--policy", "greedy", "--json", "-"]
    on = json.loads(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)
    off = json.loads(subprocess.run(cli + ["--no-immediate-start"], capture_output=True, text=True, check=True).stdout)
    assert any(a.get("immediate") for a in on["assignments"]) and on["cluster"]["nodes"] == 2
    assert not any(a.get("immediate") for a in off["assignments"])


def test_arrival_no_node_keeps_from_the_boundary_goes_where_it_starts_now():
    """A request no node can keep from the next boundary (the router answers None) goes to the
    node where it can start at once, not to the least-work fallback: node 0 ends its round with
    nothing committed but both GPUs busy, node 1 has work left but one GPU idle."""
    reqs = [{"id": "x", "arrival_ms": 0, "deadline_ms": 1000, "width": 1024, "height": 1024, "steps": 8},
            {"id": "y", "arrival_ms": 0, "deadline_ms": 30000, "width": 256, "height": 256, "steps": 28},
            {"id": "b", "arrival_ms": 450, "deadline_ms": 1950, "width": 256, "height": 256, "steps": 28}]
    inst = parse_instance({"model": "flux.1-dev-h100", "cluster": {"gpus": 2, "nodes": 2}, "round_ms": 900,
                           "requests": reqs}, name="imm-none")
    run = simulate_cluster(inst, 2, "deadline-aware", "cpsat", immediate_start=True, time_limit_ms=100,
                           deterministic=True)
    res = run.result
    assert validate_result(res.instance, res.to_json()) == []
    where = {a.request: a.gpus[0] // 2 for _, a in res.assignments}
    assert where["x"] == 0 and where["y"] == 1 and run.infeasible == 1
    first = min((a for _, a in res.assignments if a.request == "b"), key=lambda a: a.start_us)
    assert where["b"] == 1 and first.immediate and first.start_us == 450_000
    assert next(o for o in res.requests if o.id == "b").met

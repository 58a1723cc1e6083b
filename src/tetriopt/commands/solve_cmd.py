"""`tetriopt solve`: schedule a workload offline and report its figures."""

from __future__ import annotations

import json
import sys

import click

from ..instance import load_instance
from ..policies import policy_help
from .params import FiniteFloat


def write_json(path: str, data) -> None:
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)


def print_summary(res) -> None:
    s = res.summary
    click.echo(f"policy            {res.policy}")
    click.echo(f"instance          {res.instance.name} ({res.instance.profile.name}, "
               f"{res.instance.cluster.gpus} GPUs, round {res.instance.round_us / 1e3:g} ms)")
    click.echo(f"requests          {s['requests']}")
    click.echo(f"met deadlines     {s['met']}  (SLO attainment {100 * s['slo_attainment']:.1f}%)")
    click.echo(f"GPU-hours         {s['gpu_hours']:.4f}")
    click.echo(f"latency ms        p50 {s['latency_ms_p50']:.1f}  p99 {s['latency_ms_p99']:.1f}")
    why = f", {s['rollout_rounds']} of them the rollout's choice" if s.get("rollout_rounds") else ""
    click.echo(f"rounds            {s['rounds']}  (fallbacks {s['fallback_rounds']}{why})")
    click.echo(f"solver ms/round   p50 {s['solver_ms_p50']:.2f}  p99 {s['solver_ms_p99']:.2f}  max {s['solver_ms_max']:.2f}")


@click.command()
@click.argument("instance", type=click.Path(dir_okay=False))
@click.option("--policy", default="cpsat", show_default=True,
              help=policy_help())
@click.option("--time-limit-ms", type=FiniteFloat("--time-limit-ms", 0.001, 3_600_000), default=500.0, show_default=True,
              help="Wall-clock limit of each round's whole decision, from the round's snapshot to its plan "
                   "(warm starts, model, search, repair; the fallback answers when it is hit).")
@click.option("--seed", type=int, default=0, show_default=True, help="Solver random seed.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Solver threads.")
@click.option("--deterministic", is_flag=True,
              help="Stop CP-SAT on its deterministic clock: identical plans on every rerun, "
                   "even where the limit binds (wall time per round may then exceed the limit).")
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Let same-size requests share steps (cpsat/pulp: batch options in the model; greedy, "
                   "tetriserve: their batching rules; other policies ignore it). --no-batching and "
                   "--no-immediate-start: TetriServe's model (the paper's figures).")
@click.option("--immediate-start/--no-immediate-start", default=True, show_default=True,
              help="Start a request arriving mid-round at once on GPUs the round's plan leaves idle "
                   "(with several nodes: on its node, routed at arrival).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the full result as JSON ('-' for stdout).")
@click.option("--timings/--no-timings", default=True, show_default=True,
              help="Include wall-clock solver times in the JSON (off: byte-identical reruns).")
@click.option("--plan/--no-plan", "show_plan", default=False, help="Print every assignment.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--nodes", type=click.IntRange(min=1), default=None,
              help="Nodes of cluster.gpus GPUs each (default: the instance's cluster.nodes, else 1).")
@click.option("--router", default="deadline-aware", show_default=True,
              help="With several nodes: round-robin, least-work, deadline-aware, or global "
                   "(one planner over every node's GPUs).")
def solve(instance, policy, time_limit_ms, seed, workers, deterministic, batching, immediate_start, json_out,
          timings, show_plan, progress, nodes, router) -> None:
    """Schedule INSTANCE round by round and print the plan's figures."""
    from .. import solve as run_solve
    from ..policies import make_policy

    inst = load_instance(instance)
    nodes = nodes or inst.nodes
    opts = dict(time_limit_ms=time_limit_ms, seed=seed, workers=workers, deterministic=deterministic)
    pol = make_policy(policy, batching=batching, immediate_start=immediate_start, **opts)
    if nodes > 1:
        from ..cluster.multinode import check_router
        check_router(router)
    bar = None
    if progress or (progress is None and sys.stderr.isatty() and len(inst.requests) >= 50):
        from tqdm import tqdm
        bar = tqdm(total=len(inst.requests), desc=pol.name, unit="req", file=sys.stderr)
    run = None
    try:
        if nodes > 1:
            from ..cluster.multinode import run_routed
            run = run_routed(inst, nodes, policy, router, progress=bar.update if bar else None, batching=batching,
                             immediate_start=immediate_start, **opts)
            res = run.result
        else:
            res = run_solve(inst, pol, progress=bar.update if bar else None, immediate_start=immediate_start)
    finally:
        if bar:
            bar.close()
    if show_plan:
        for rd, a in res.assignments:
            click.echo(f"round {rd:5d}  {a.request:>10s}  gpus {','.join(map(str, a.gpus)):<16s} "
                       f"steps {a.steps:3d}  {a.start_us / 1e3:10.1f} -> {a.end_us / 1e3:10.1f} ms"
                       + (f"  batch +{','.join(a.batch)}" if a.batch else "") + ("  immediate" if a.immediate else ""))
    if json_out != "-":
        print_summary(res)
        if run is not None:
            s = run.summary
            click.echo(f"nodes x router    {nodes} x {s['router']}  (requests per node {s['routed_per_node']})")
            click.echo(f"routing           no node could keep {s['rejected']} (429), none alone {s['infeasible']} "
                       f"(400); both ran best effort; moved {s['moved']}")
            click.echo(f"decision ms/round p50 {s['decision_ms_p50']:.2f}  p99 {s['decision_ms_p99']:.2f}  "
                       f"max {s['decision_ms_max']:.2f}")
    if json_out:
        out = res.to_json(timings=timings)
        if run is not None:
            out["cluster"] = {k: run.summary[k] for k in ("nodes", "router", "rejected", "infeasible", "moved",
                                                              "routed_per_node")}
            if timings:
                out["cluster"].update({k: run.summary[k] for k in ("decision_ms_p50", "decision_ms_p99",
                                                                   "decision_ms_max")})
        write_json(json_out, out)

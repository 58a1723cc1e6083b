"""`tetriopt bench`: several policies on the same generated workloads, side by side, with the bound."""

from __future__ import annotations

import os
import sys

import click

from ..policies import REGISTRY, bench_policies, policy_help
from .params import FiniteFloat
from .solve_cmd import write_json


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _policies(text: str) -> list[str]:
    """Comma-separated names; an explicit RSSP mapping keeps its own commas (rssp:256=1,1024=2)."""
    out: list[str] = []
    for part in _list(text):
        if out and out[-1].startswith("rssp:") and part[:1].isdigit():
            out[-1] += "," + part
        else:
            out.append(part)
    return out


@click.command()
@click.option("--model", "models", default="flux.1-dev-h100", show_default=True, help="Profile name(s), comma-separated.")
@click.option("--gpus", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--islands", type=click.IntRange(min=1), default=None, help="Island size (e.g. 2 for SD3 on 4x A40).")
@click.option("--mix", "mixes", default="uniform,skewed", show_default=True, help="Size mixes, comma-separated.")
@click.option("--slo-scales", default="1.0,1.1,1.2,1.5", show_default=True)
@click.option("--rates", default="12", show_default=True, help="Arrival rates (requests/min), comma-separated.")
@click.option("--round-ms", "round_ms", default="default", show_default=True,
              help="Round lengths in ms, comma-separated ('default': the profile's).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Workload seeds, comma-separated.")
@click.option("-n", "--requests", "n", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--cv", type=float, default=1.0, show_default=True, help="Inter-arrival CV (1: Poisson).")
@click.option("--policies", default=None,
              help=f"Comma-separated, of: {policy_help()} (default: all but "
                   f"{', '.join(k.pattern for k in REGISTRY if not k.bench)}; fixed-sp-K for every K that fits). "
                   "'rssp' = oracle static mapping chosen with hindsight per instance.")
@click.option("--time-limit-ms", type=FiniteFloat("--time-limit-ms", 0.001, 3_600_000), default=200.0, show_default=True,
              help="Per-round MIP time limit for cpsat/pulp.")
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Every policy (and the bound) with batching (same as the suffix '+batching' on each name); "
                   "--no-batching --no-immediate-start: TetriServe's model (the paper's figures).")
@click.option("--immediate-start/--no-immediate-start", default=True, show_default=True,
              help="Every policy (and the bound) with immediate starts (suffix '+immediate').")
@click.option("--bound/--no-bound", default=True, show_default=True, help="Also compute the hindsight upper bound.")
@click.option("--bound-time-s", type=click.FloatRange(min=0.01), default=60.0, show_default=True)
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Worker processes (default: CPUs).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write rows and aggregates as JSON ('-' for stdout).")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Write PNGs here: SLO attainment vs each swept axis, and a Gantt chart.")
@click.option("--gantt-policy", default="cpsat", show_default=True, help="Policy drawn in the Gantt chart.")
@click.option("--gantt-window-s", default="0,120", show_default=True, help="Time window of the Gantt chart (s).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Nodes of --gpus GPUs each; with K > 1 every policy P runs as P@ROUTER for each --router.")
@click.option("--router", "routers", default="global,round-robin,least-work,deadline-aware", show_default=True,
              help="With --nodes > 1: routers, comma-separated ('global': one planner over all GPUs).")
def bench(models, gpus, islands, mixes, slo_scales, rates, round_ms, seeds, n, steps, cv, policies, time_limit_ms,
          batching, immediate_start, bound, bound_time_s, jobs, json_out, plot_dir, gantt_policy, gantt_window_s,
          progress, nodes, routers) -> None:
    """Run policies side by side on the same workloads (cartesian product of the lists)."""
    from .. import bench as B
    from ..errors import InputError

    rms = [None if x == "default" else v for x in _list(round_ms)
           for v in ([None] if x == "default" else B.parse_floats(x, "round-ms"))]
    try:
        seed_list = [int(s) for s in _list(seeds)]
    except ValueError:
        raise InputError("seeds", seeds, "expected comma-separated integers") from None
    if not seed_list:
        raise InputError("seeds", seeds, "need at least one seed")
    pts = B.points(models=_list(models), gpus=gpus, islands=islands, mixes=_list(mixes),
                   slo_scales=B.parse_floats(slo_scales, "slo-scales"), rates=B.parse_floats(rates, "rates"),
                   round_ms=rms, seeds=seed_list, n=n, steps=steps, cv=cv, nodes=nodes)
    for p in {(p.model, p.mix) for p in pts}:  # validate model and mix names once, before the pool
        B.Point(model=p[0], mix=p[1], gpus=gpus, islands=islands, n=1).instance()
    if policies:
        pols = _policies(policies)
    else:
        pols = bench_policies(gpus)
    if nodes > 1:
        feat = "+batching" * batching + "+immediate" * immediate_start
        pols = list(dict.fromkeys(p if "@" in p else f"{p}{feat}@{r}" for p in (pols if policies else ["cpsat"])
                                  for r in _list(routers)))
        bound, plot_dir, batching, immediate_start = False, None, False, False  # the bound and the plots are single-node
    try:
        window = tuple(float(x) for x in _list(gantt_window_s))
        assert len(window) == 2 and window[0] < window[1]
    except (ValueError, AssertionError):
        raise InputError("gantt-window-s", gantt_window_s, "expected START,END in seconds") from None
    on = [f for f, want in (("batching", batching), ("immediate", immediate_start)) if want]

    def featured(p: str) -> str:  # a name that lists a feature already keeps it once
        return p + "".join("+" + f for f in on if f not in B.split_features(p)[1])

    if on:
        pols = list(dict.fromkeys(map(featured, pols)))
        if bound:
            pols.append(featured(B.BOUND))
    jobs = jobs or os.cpu_count() or 1
    total = len(pts) * (len(pols) + bound)
    bar = None
    if progress or (progress is None and sys.stderr.isatty()):
        from tqdm import tqdm
        bar = tqdm(total=total, desc="bench", unit="run", file=sys.stderr)
    try:
        rows = B.run(pts, pols, bound=bound, time_limit_ms=time_limit_ms, bound_time_s=bound_time_s, jobs=jobs,
                     progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    agg = B.aggregate(rows)
    axes = B.varying_axes(agg) or ["slo_scale"]
    text, issues = _report(B, rows, agg, axes)
    if json_out != "-":
        click.echo(text)
    if plot_dir:
        made = _plots(B, agg, axes, pts[0], plot_dir, featured(gantt_policy), time_limit_ms, window)
        if json_out != "-":
            click.echo("plots: " + ", ".join(str(p) for p in made))
    if json_out:
        write_json(json_out, {"rows": rows, "aggregate": agg, "issues": issues})


def _report(B, rows: list[dict], agg: list[dict], axes: list[str]) -> tuple[str, list[str]]:
    """The tables, runs that could not run, and where cpsat is not on top (or a policy above the bound)."""
    errors = [r for r in rows if "error" in r]
    text = [B.table(agg, "slo_attainment", axis=ax) for ax in axes]
    text.append(B.summary_table(agg))
    issues = B.check_dominance(agg)
    if errors:
        text.append("could not run:\n" + "\n".join(f"  {r['policy']} on {r['instance']}: {r['error']}" for r in errors[:20]))
    text.append("cpsat below another policy / policy above the bound:\n" + ("\n".join("  " + i for i in issues)
                                                                          if issues else "  none"))
    return "\n".join(text), issues


def _plots(B, agg: list[dict], axes: list[str], first, plot_dir: str, gantt_policy: str, time_limit_ms: float,
           window: tuple[float, float]) -> list:
    """SLO attainment vs each swept axis, and a Gantt chart of the first point's instance."""
    from .. import plots
    from ..simulate import simulate

    made = []
    for ax in axes:
        made += plots.slo_vs_axis(agg, ax, plot_dir)
    inst = first.instance()
    pol, _ = B.bench_policy(gantt_policy, inst, time_limit_ms)
    immediate = "immediate" in B.split_features(gantt_policy)[1]
    made.append(plots.gantt(simulate(inst, pol, immediate_start=immediate),
                            os.path.join(plot_dir, f"gantt-{gantt_policy}-{first.label()}.png"), window_s=window))
    return made

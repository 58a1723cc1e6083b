"""`tetriopt bound`: an upper bound on the SLO attainment any plan can reach (docs/bound.md)."""

from __future__ import annotations

import click

from .params import FiniteFloat


@click.command()
@click.argument("instance", type=click.Path(dir_okay=False))
@click.option("--time-limit-s", type=FiniteFloat("--time-limit-s", 0.0, 86_400, open_lo=True), default=60.0, show_default=True,
              help="Total time (model building included); unfinished components contribute a looser valid "
                   "bound (CP-SAT's proven bound, or their count of requests feasible alone).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--mip-s", type=FiniteFloat("--mip-s", 0.0, 86_400), default=0.0, show_default=True,
              help="Then up to this long of HiGHS's branch and cut on each component left unproven (beyond "
                   "--time-limit-s; a floating-point MIP bound, docs/bound.md seventh round; needs highspy).")
@click.option("--mip-nodes", type=click.IntRange(min=0), default=0, show_default=True,
              help="Stop HiGHS after this many branch-and-bound nodes per component; without --mip-s it then has "
                   "no time limit and the figure does not depend on the CPU (docs/bound.md eighth round).")
@click.option("--immediate-start/--no-immediate-start", default=True, show_default=True,
              help="Bound plans that may start a request at its arrival, mid-round (solve's --immediate-start).")
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Bound plans that may share steps between same-size requests (solve's --batching).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write {slo_attainment_bound, met_bound, requests, ...} as JSON ('-' for stdout).")
def bound(instance, time_limit_s, workers, mip_s, mip_nodes, immediate_start, batching, json_out) -> None:
    """Upper bound on deadlines met by ANY valid plan for INSTANCE (hindsight relaxation).

    By default the model solve runs by default (immediate starts, batching); with --no-immediate-start
    --no-batching, TetriServe's model (round-boundary starts, one request per step)."""
    from ..bound import upper_bound
    from ..instance import load_instance
    from .solve_cmd import write_json

    if mip_s > 0 or mip_nodes > 0:
        try:
            import highspy  # noqa: F401
        except ImportError:
            raise click.UsageError("--mip-s / --mip-nodes need highspy (pip install highspy, or the dev extras)") from None
    inst = load_instance(instance)
    b = upper_bound(inst, time_limit_s=time_limit_s, workers=workers, arrival_visible=immediate_start,
                    batching=batching, mip_s=mip_s, mip_nodes=mip_nodes)
    if json_out != "-":
        click.echo(f"instance          {inst.name} ({inst.profile.name}, {inst.cluster.gpus} GPUs, "
                   f"round {inst.round_us / 1e3:g} ms)")
        click.echo(f"requests          {b.requests}  (feasible alone {'<= ' if b.methods.get('unchecked') else ''}"
                   f"{b.feasible_alone})")
        click.echo(f"met bound         {b.met_bound}  (SLO attainment <= {100 * b.slo_attainment_bound:.1f}%)")
        click.echo(f"relaxation        {b.status}: {b.optimal_components}/{b.components} components proven, "
                   f"incumbent {b.incumbent}, {b.solve_s:.2f} s")
        looser = [f"{v} component(s) by {k}" for k, v in b.methods.items() if k not in ("optimal", "unchecked") and v]
        if b.methods.get("unchecked"):
            looser.append(f"{b.methods['unchecked']} request(s) counted met unchecked (the limit ended the screen)")
        if looser:
            click.echo("looser bounds     " + ", ".join(looser))
    if json_out:
        write_json(json_out, b.to_json())

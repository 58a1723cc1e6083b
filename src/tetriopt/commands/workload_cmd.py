"""`tetriopt workload`: write a seeded, reproducible instance file."""

from __future__ import annotations

import json
import math

import click

from .params import BoundedInt, FiniteFloat


@click.command()
@click.option("--model", default="flux.1-dev-h100", show_default=True, help="Profile name or path.")
@click.option("--gpus", type=BoundedInt("--gpus", 1, 4096), default=8, show_default=True)
@click.option("--islands", default=None, help="Island size (e.g. 2: GPUs 0-1, 2-3, ...).", type=BoundedInt("--islands", 1, 4096))
@click.option("-n", "--requests", "n", type=BoundedInt("-n", 1, 10_000_000), default=300, show_default=True)
@click.option("--rate", type=FiniteFloat("--rate", 0, open_lo=True), default=12.0, show_default=True, help="Requests per minute.")
@click.option("--cv", type=FiniteFloat("--cv", 0, open_lo=True), default=1.0, show_default=True,
              help="Coefficient of variation of inter-arrival times (1: Poisson, >1: bursty).")
@click.option("--mix", default="uniform", show_default=True, help="uniform, skewed or SIZE:WEIGHT,...")
@click.option("--slo-scale", type=FiniteFloat("--slo-scale", 0, open_lo=True), default=1.0, show_default=True)
@click.option("--steps", type=BoundedInt("--steps", 1, 1000), default=20, show_default=True)
@click.option("--targets", default=None, help="SLO targets in ms, SIZE:MS,... (default: the model's table).")
@click.option("--round-ms", type=FiniteFloat("--round-ms", 0, 3_600_000, open_lo=True), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True)
def workload(model, gpus, islands, n, rate, cv, mix, slo_scale, steps, targets, round_ms, seed, out) -> None:
    """Generate a workload instance (Poisson or bursty arrivals, the paper's size mixes)."""
    from ..errors import InputError
    from ..workload import generate

    table = None
    if targets:
        try:
            table = {int(a): float(b) for a, b in (p.split(":") for p in targets.split(","))}
        except ValueError:
            raise InputError("targets", targets, "use SIZE:MS,...") from None
        if not all(math.isfinite(v) and v > 0 for v in table.values()):
            raise InputError("targets", targets, "every target must be a positive finite number of ms")
    if islands and (islands & (islands - 1) or gpus % islands):
        raise InputError("--islands", islands, f"must be a power of two dividing --gpus {gpus} "
                         "(otherwise some SP degrees have no aligned GPU set)")
    isl = [list(range(i, min(i + islands, gpus))) for i in range(0, gpus, islands)] if islands else None
    data = generate(model, gpus, n, rate, mix=mix, slo_scale=slo_scale, steps=steps, seed=seed, cv=cv,
                    islands=isl, targets_ms=table, round_ms=round_ms)
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    click.echo(f"wrote {out}: {data['description']}")

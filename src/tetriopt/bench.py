"""Side-by-side runs of several policies on the same generated workloads, plus the upper bound.

A *point* is one workload: (model, GPUs, islands, mix, SLO scale, rate, round length, n, steps,
seed). Every policy runs on the very same instance of a point; so does the bound. Points x
policies are independent jobs, run in worker processes (`jobs`); results are rows of plain
dicts, aggregated over seeds (mean, standard deviation, min, max) for the tables and plots.

Policy names are those of `make_policy`, except "rssp", which here means the paper's "oracle
static" baseline: the per-resolution degree mapping chosen with hindsight on each instance
(`oracle_mapping`, below); the mapping found is kept in the row ("detail"). A name may end
in `+batching` and/or `+immediate` (e.g. `cpsat+batching+immediate`, `bound+batching+immediate`):
that policy (or the bound of that extended model) with the feature on, so that runs with and
without the features sit side by side on the same workloads.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping

from .errors import InputError
from .policies import Policy, bench_policies, make_policy
from .policies.rssp import RSSP, doubling_rule, mapping_name
from .simulate import simulate

DEFAULT_POLICIES = tuple(bench_policies(8))  # the registry's, on 8 GPUs
METRICS = ("slo_attainment", "met", "gpu_hours", "latency_ms_p50", "latency_ms_p99", "solver_ms_p50",
           "solver_ms_p99", "fallback_rounds")
CLUSTER_METRICS = ("rejected", "infeasible", "moved", "decision_ms_p50", "decision_ms_p99")  # POLICY@ROUTER rows
AXES = ("slo_scale", "rate", "round_ms")
BOUND = "bound"


@dataclass(frozen=True)
class Point:
    model: str = "flux.1-dev-h100"
    gpus: int = 8
    islands: int | None = None
    mix: str = "uniform"
    slo_scale: float = 1.0
    rate: float = 12.0
    round_ms: float | None = None
    n: int = 300
    steps: int = 20
    seed: int = 0
    cv: float = 1.0
    nodes: int = 1   # nodes of `gpus` each; policies named POLICY@ROUTER route across them

    def instance(self):
        from .instance import parse_instance
        from .workload import generate

        isl = ([list(range(i, min(i + self.islands, self.gpus))) for i in range(0, self.gpus, self.islands)]
               if self.islands else None)
        data = generate(self.model, self.gpus, self.n, self.rate, mix=self.mix, slo_scale=self.slo_scale,
                        steps=self.steps, seed=self.seed, cv=self.cv, islands=isl, round_ms=self.round_ms)
        if self.nodes > 1:
            data["cluster"]["nodes"] = self.nodes
        return parse_instance(data, name=self.label())

    def label(self) -> str:
        return (f"{self.model}-{str(self.nodes) + 'x' if self.nodes > 1 else ''}{self.gpus}g{'-i' + str(self.islands) if self.islands else ''}-{self.mix}"
                f"-slo{self.slo_scale:g}-r{self.rate:g}{'-R' + format(self.round_ms, 'g') if self.round_ms else ''}"
                f"-n{self.n}-s{self.seed}")

    def group(self) -> tuple:
        """Everything but the seed: the key runs are averaged over."""
        return tuple((k, v) for k, v in asdict(self).items() if k != "seed")


def points(models: Iterable[str] = ("flux.1-dev-h100",), gpus: int = 8, islands: int | None = None,
           mixes: Iterable[str] = ("uniform",), slo_scales: Iterable[float] = (1.0,), rates: Iterable[float] = (12.0,),
           round_ms: Iterable[float | None] = (None,), seeds: Iterable[int] = (0,), n: int = 300, steps: int = 20,
           cv: float = 1.0, nodes: int = 1) -> list[Point]:
    """The cartesian product of the given lists."""
    return [Point(model=m, gpus=gpus, islands=islands, mix=x, slo_scale=float(s), rate=float(r),
                  round_ms=rm, n=n, steps=steps, seed=sd, cv=cv, nodes=nodes)
            for m, x, s, r, rm, sd in itertools.product(models, mixes, slo_scales, rates, round_ms, seeds)]


FEATURES = ("batching", "immediate")


def split_features(name: str) -> tuple[str, set[str]]:
    """'cpsat+batching+immediate' -> ('cpsat', {'batching', 'immediate'}); a router stays on the
    base: 'cpsat+batching@global' -> ('cpsat@global', {'batching'})."""
    name, at, router = name.partition("@")
    base, *feats = name.split("+")
    bad = [f for f in feats if f not in FEATURES]
    if bad:
        raise InputError("policies", name, f"unknown feature {bad[0]!r}; features: {', '.join(FEATURES)}")
    return base + at + router, set(feats)


def oracle_mapping(inst, start: Mapping[int, int] | None = None, passes: int = 3,
                   sizes: tuple[int, ...] | None = None) -> tuple[dict[int, int], dict]:
    """The best static mapping for this workload, with hindsight: coordinate descent on met
    deadlines (ties: fewer GPU-hours), one resolution at a time over every usable degree.

    Returns (mapping, info) with info = {"simulations": n, "met": best met count}.
    """
    if sizes is None:
        sizes = tuple(sorted({int(round(math.sqrt(r.width * r.height))) for r in inst.requests}))
    cache: dict[tuple, tuple[int, float]] = {}

    def fill(base: Mapping[int, int]) -> dict[int, int]:
        return {s: base.get(s, min(base.items(), key=lambda kv: abs(math.log(kv[0] / s)))[1]) for s in sizes}

    def score(mp: dict[int, int]) -> tuple[int, float]:
        key = tuple(sorted(mp.items()))
        if key not in cache:
            res = simulate(inst, RSSP(mp))
            cache[key] = (res.summary["met"], -res.summary["gpu_hours"])
        return cache[key]

    if start:
        mapping = fill(start)
    else:  # the best of the doubling rule and every uniform degree, then descend
        starts = [fill(doubling_rule(inst.profile, inst.degrees, inst.round_us))]
        starts += [{s: k for s in sizes} for k in inst.degrees
                   if all(inst.profile.step_us(s, s, k) <= inst.round_us for s in sizes)]
        mapping = max(starts, key=lambda mp: score(mp))

    best = score(mapping)
    for _ in range(passes):
        improved = False
        for s in sizes:
            for k in inst.degrees:
                if k == mapping[s]:
                    continue
                trial = {**mapping, s: k}
                if inst.profile.step_us(s, s, k) > inst.round_us:
                    continue
                sc = score(trial)
                if sc > best:
                    best, mapping, improved = sc, trial, True
        if not improved:
            break
    return mapping, {"simulations": len(cache), "met": best[0]}


def bench_policy(name: str, inst, time_limit_ms: float, deterministic: bool = False) -> tuple[Policy, str]:
    """The policy `bench` runs under a name (features stripped: see split_features), and the detail
    its row keeps: "rssp" is the hindsight mapping for this instance (`oracle_mapping`), every
    other name is `make_policy`'s."""
    name, feats = split_features(name)
    if name == "rssp":
        mapping, _ = oracle_mapping(inst)
        return RSSP(mapping, name="rssp"), mapping_name(mapping)
    return make_policy(name, time_limit_ms=time_limit_ms, batching="batching" in feats,
                       immediate_start="immediate" in feats, deterministic=deterministic), ""


def run_one(point: Point, policy: str, time_limit_ms: float = 200.0, bound_time_s: float = 60.0,
            instance=None, deterministic: bool = False) -> dict[str, Any]:
    """One policy (or "bound") on one point: a flat row. `deterministic`: cpsat/pulp stop on the
    solver's deterministic clock (met counts that do not depend on the machine's load)."""
    inst = instance if instance is not None else point.instance()
    row: dict[str, Any] = {**asdict(point), "policy": policy, "instance": point.label()}
    t0 = time.perf_counter()
    base, feats = split_features(policy)
    if base == BOUND:
        from .bound import upper_bound

        b = upper_bound(inst, time_limit_s=bound_time_s, arrival_visible="immediate" in feats,
                        batching="batching" in feats)
        row.update(slo_attainment=b.slo_attainment_bound, met=b.met_bound, requests=b.requests,
                   detail=b.status, wall_s=round(time.perf_counter() - t0, 3))
        return row
    if "@" in policy:  # POLICY@ROUTER on point.nodes nodes (ROUTER "global": one planner over all GPUs)
        from .cluster.multinode import run_routed

        run = run_routed(inst, point.nodes, *base.split("@", 1), time_limit_ms=time_limit_ms,
                         batching="batching" in feats, immediate_start="immediate" in feats,
                         deterministic=deterministic)
        s = run.summary
        row.update({k: s[k] for k in METRICS + CLUSTER_METRICS}, requests=s["requests"], detail="",
                   wall_s=round(time.perf_counter() - t0, 3))
        return row
    pol, detail = bench_policy(policy, inst, time_limit_ms, deterministic)
    t1 = time.perf_counter()
    res = simulate(inst, pol, immediate_start="immediate" in feats)
    s = res.summary
    row.update({k: s[k] for k in METRICS}, requests=s["requests"], detail=detail,
               wall_s=round(time.perf_counter() - t0, 3), sim_s=round(time.perf_counter() - t1, 3),
               solver_s=round(sum(r.solve_ms for r in res.rounds) / 1e3, 3))
    return row


def _job(args):
    point, policy, time_limit_ms, bound_time_s, deterministic = args
    try:
        return run_one(point, policy, time_limit_ms, bound_time_s, deterministic=deterministic)
    except (InputError, RuntimeError) as e:  # a policy that cannot run this workload (e.g. a step longer
        # than a round) or that stalls (simulate's idle-round guard): reported, not fatal to the run
        return {**asdict(point), "policy": policy, "instance": point.label(), "error": f"{type(e).__name__}: {e}"[:300]}


def run(pts: list[Point], policies: Iterable[str] = DEFAULT_POLICIES, bound: bool = True,
        time_limit_ms: float = 200.0, bound_time_s: float = 60.0, jobs: int = 1,
        progress: Callable[[int], None] | None = None, deterministic: bool = False) -> list[dict[str, Any]]:
    """Every policy (and the bound) on every point; rows in a stable order."""
    pols = list(policies) + ([BOUND] if bound and BOUND not in {split_features(p)[0] for p in policies} else [])
    from .policies import make_policy

    for p in pols:  # fail fast on a bad name, before any work
        if "@" in p:
            from .cluster.multinode import check_router

            p, router = p.split("@", 1)
            check_router(router)
        base, _ = split_features(p)
        if base not in (BOUND, "rssp"):
            make_policy(base)
    # expensive jobs first so that the pool does not end on one long cpsat run
    work = sorted(((pt, p, time_limit_ms, bound_time_s, deterministic) for pt in pts for p in pols),
                  key=lambda a: (a[1] not in ("cpsat", "pulp"), -a[0].n * a[0].rate))
    rows = []
    if jobs <= 1:
        for a in work:
            rows.append(_job(a))
            if progress:
                progress(1)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            futs = [ex.submit(_job, a) for a in work]
            for f in as_completed(futs):
                rows.append(f.result())
                if progress:
                    progress(1)
    order = {p: i for i, p in enumerate(pols)}
    rows.sort(key=lambda r: (r["instance"], order[r["policy"]]))
    return rows


def _stats(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs), "n": len(xs)}


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean / sd / min / max over seeds per (point without seed, policy)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "error" in r:
            continue
        key = tuple((k, r[k]) for k in asdict(Point()) if k != "seed") + (("policy", r["policy"]),)
        groups.setdefault(key, []).append(r)
    out = []
    for key, rs in groups.items():
        agg = dict(key)
        agg["seeds"] = sorted(r["seed"] for r in rs)
        for m in METRICS + CLUSTER_METRICS + ("wall_s",):
            vals = [r[m] for r in rs if r.get(m) is not None]
            if vals:
                agg[m] = _stats([float(v) for v in vals])
        details = sorted({r.get("detail", "") for r in rs} - {""})
        if details:
            agg["detail"] = details
        out.append(agg)
    return out


def varying_axes(agg: list[dict]) -> list[str]:
    return [a for a in AXES if len({str(r[a]) for r in agg}) > 1]


def table(agg: list[dict], metric: str = "slo_attainment", axis: str | None = None, pct: bool = True) -> str:
    """A text table per (model, mix, fixed axes): policies as rows, the swept axis as columns."""
    axes = varying_axes(agg)
    axis = axis or (axes[0] if axes else "slo_scale")
    fixed = [a for a in AXES if a != axis]
    blocks: dict[tuple, list[dict]] = {}
    for r in agg:
        blocks.setdefault((r["model"], r["gpus"], r["islands"], r["mix"], r["n"], r["steps"])
                          + tuple(r[a] for a in fixed), []).append(r)
    out = []
    for key, rs in blocks.items():
        cols = sorted({r[axis] for r in rs}, key=lambda v: (v is None, v or 0))
        pols = list(dict.fromkeys(r["policy"] for r in rs))
        cell = {(r["policy"], r[axis]): r for r in rs}
        nodes = rs[0].get("nodes", 1)
        head = (f"{key[0]} {str(nodes) + ' nodes x ' if nodes > 1 else ''}{key[1]} GPUs"
                f"{' (islands of %d)' % key[2] if key[2] else ''}, {key[3]} mix, "
                f"n={key[4]}, {key[5]} steps, " + ", ".join(f"{a}={v if v is not None else 'default'}"
                                                            for a, v in zip(fixed, key[6:])))
        out.append(f"{metric} by {axis} -- {head}")
        w = max(len(p) for p in pols) + 2
        out.append(" " * w + "".join(f"{str(c if c is not None else 'default'):>16s}" for c in cols)
                   + f"{'mean':>10s}")
        for p in pols:
            line, means = f"{p:<{w}s}", []
            for c in cols:
                st = cell.get((p, c), {}).get(metric)
                if st is None:
                    line += f"{'-':>16s}"
                    continue
                f = 100 if pct else 1
                means.append(st["mean"] * f)
                line += f"{st['mean'] * f:>9.1f} ±{st['sd'] * f:>5.1f}"
            line += f"{statistics.fmean(means):>10.1f}" if len(means) == len(cols) else f"{'-':>10s}"
            out.append(line)
        out.append("")
    return "\n".join(out)


GROUP_LABELS = {"slo_scale": "SLO scale {:g}", "rate": "rate {:g}/min", "round_ms": "round {} ms"}


def markdown_table(agg: list[dict], axis: str, by: tuple[str, ...] = ("model", "gpus", "mix"),
                   mean_col: bool = False, bold: tuple[str, ...] = ()) -> str:
    """Markdown tables of SLO attainment % (mean ± sd over seeds), policies x `axis`, one table per
    value of `by` (the docs' tables; benchmarks/paper_eval.py and batching_eval.py print them)."""
    out = []
    keyf = lambda r: tuple(r[k] for k in by)  # noqa: E731
    for key in dict.fromkeys(keyf(r) for r in agg):
        rs = [r for r in agg if keyf(r) == key and "slo_attainment" in r]
        if not rs:
            continue
        cols = sorted({r[axis] for r in rs})
        cell = {(r["policy"], r[axis]): r["slo_attainment"] for r in rs}
        m0 = rs[0]
        extra = "".join(", " + GROUP_LABELS[k].format(m0[k]) for k in by if k in GROUP_LABELS)
        out.append(f"**{m0['model']}, {m0['gpus']} GPUs, {m0['mix']} mix{extra}** (SLO attainment %, "
                   f"mean ± sd over seeds {m0['seeds']})\n")
        out.append("| policy | " + " | ".join(f"{c:g}" for c in cols) + (" | mean |" if mean_col else " |"))
        out.append("|---|" + "---:|" * (len(cols) + mean_col))
        for p in dict.fromkeys(r["policy"] for r in rs):
            vals = [cell.get((p, c)) for c in cols]
            line = f"| {f'**{p}**' if p in bold else p} | " + " | ".join(
                f"{100 * v['mean']:.1f} ± {100 * v['sd']:.1f}" if v else "-" for v in vals) + " |"
            if mean_col:
                means = [v["mean"] for v in vals if v]
                line += f" {100 * statistics.fmean(means):.1f} |" if len(means) == len(cols) else " - |"
            out.append(line)
        out.append("")
    return "\n".join(out)


def report(agg: list[dict], rows: list[dict], head: str) -> str:
    """`head` (tables), then every metric (summary_table), dominance issues and failed rows: what
    the benchmarks under benchmarks/ write per experiment."""
    errs = [r for r in rows if "error" in r]
    return (head + summary_table(agg) + "\nissues:\n" + ("\n".join(check_dominance(agg)) or "none")
            + "\nerrors:\n" + ("\n".join(f"{r['policy']} {r['instance']}: {r['error']}" for r in errs) or "none")
            + "\n")


def summary_table(agg: list[dict]) -> str:
    """Every metric per (point group, policy), means over seeds."""
    hdr = ("policy", "SLO %", "sd", "met", "GPU-h", "p50 ms", "p99 ms", "solve p50", "solve p99", "fallbk")
    out = []
    keyf = lambda r: (r["model"], r["mix"], r["slo_scale"], r["rate"], r["round_ms"])  # noqa: E731
    for key in dict.fromkeys(keyf(r) for r in agg):
        out.append(f"{key[0]} {key[1]} slo_scale={key[2]:g} rate={key[3]:g}/min round_ms={key[4] or 'default'}")
        out.append(f"  {hdr[0]:<22s}" + "".join(f"{h:>10s}" for h in hdr[1:]))
        for r in (r for r in agg if keyf(r) == key):
            g = lambda m, f=1.0, d=1: ("%10.*f" % (d, r[m]["mean"] * f)) if m in r else f"{'-':>10s}"  # noqa: E731
            sd = f"{r['slo_attainment']['sd'] * 100:10.1f}" if "slo_attainment" in r else f"{'-':>10s}"
            out.append(f"  {r['policy']:<22s}" + g("slo_attainment", 100) + sd + g("met") + g("gpu_hours", 1, 3) + g("latency_ms_p50", 1, 0) + g("latency_ms_p99", 1, 0)
                       + g("solver_ms_p50", 1, 2) + g("solver_ms_p99", 1, 2) + g("fallback_rounds", 1, 1))
        out.append("")
    return "\n".join(out)


def check_dominance(agg: list[dict], leader: str = "cpsat") -> list[str]:
    """Where `leader` is below another policy (means over seeds), or a policy above the bound."""
    issues = []
    by: dict[tuple, dict[str, float]] = {}
    for r in agg:
        if "slo_attainment" not in r:
            continue
        k = tuple((a, r[a]) for a in ("model", "gpus", "islands", "mix", "n", "steps") + AXES)
        by.setdefault(k, {})[r["policy"]] = r["slo_attainment"]["mean"]
    for k, v in by.items():
        where = ", ".join(f"{a}={b}" for a, b in k)
        for p, x in v.items():
            base, feats = split_features(p)
            if base == BOUND:
                continue
            lead = "+".join([leader, *sorted(feats)])
            if base != leader and lead in v and x > v[lead] + 1e-9:
                issues.append(f"{p} {100 * x:.1f}% > {lead} {100 * v[lead]:.1f}% at {where}")
            for b, y in v.items():  # a bound bounds the policies whose features its model includes
                bb, bfeats = split_features(b)
                if bb == BOUND and feats <= bfeats and x > y + 1e-9:
                    issues.append(f"{p} {100 * x:.1f}% above the bound {b} {100 * y:.1f}% at {where}")
    return issues


def parse_floats(text: str, field: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(field, text, "expected comma-separated numbers") from None
    if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
        raise InputError(field, text, "expected positive numbers")
    return vals


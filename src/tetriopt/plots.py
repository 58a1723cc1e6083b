"""PNG plots for `tetriopt bench --plot DIR` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

STYLE = {"cpsat": ("tab:red", "o", "-"), "pulp": ("tab:pink", "o", "-"), "tetriserve": ("tab:blue", "s", "-"),
         "tetriserve-placement": ("tab:cyan", "s", "--"), "tetriserve-schedule": ("tab:purple", "s", ":"),
         "rssp": ("tab:green", "^", "-"), "greedy": ("tab:orange", "D", "--"), "bound": ("black", "", "--")}
FIXED = ["tab:gray", "tab:brown", "tab:olive", "darkgray", "silver"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(policy: str, i: int):
    if policy in STYLE:
        return STYLE[policy]
    return FIXED[i % len(FIXED)], "x", ":"


def slo_vs_axis(agg: list[dict], axis: str, out: str | Path, title: str = "") -> list[Path]:
    """One PNG per (model, mix, other axes): SLO attainment vs `axis`, a line per policy, the bound dashed."""
    plt = _plt()
    from .bench import AXES

    fixed = [a for a in AXES if a != axis]
    blocks: dict[tuple, list[dict]] = {}
    for r in agg:
        if "slo_attainment" in r:
            blocks.setdefault((r["model"], r["gpus"], r["islands"], r["mix"]) + tuple(r[a] for a in fixed), []).append(r)
    paths = []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for key, rs in blocks.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        pols = list(dict.fromkeys(r["policy"] for r in rs))
        nfixed = 0
        for p in pols:
            pts = sorted((r[axis], r["slo_attainment"]) for r in rs if r["policy"] == p and r[axis] is not None)
            if not pts:
                continue
            color, marker, ls = _style(p, nfixed)
            nfixed += p not in STYLE
            xs = [x for x, _ in pts]
            ys = [100 * s["mean"] for _, s in pts]
            lo = [100 * (s["mean"] - s["min"]) for _, s in pts]
            hi = [100 * (s["max"] - s["mean"]) for _, s in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], label=p, color=color, marker=marker, linestyle=ls,
                        capsize=3, linewidth=2.2 if p in ("cpsat", "bound") else 1.4, markersize=5)
        ax.set_xlabel({"slo_scale": "SLO scale", "rate": "arrival rate (requests/min)",
                       "round_ms": "round length (ms)"}[axis])
        ax.set_ylabel("SLO attainment (%)  [mean over seeds, bars: min-max]")
        ax.set_title(title or f"{key[0]}, {key[1]} GPUs, {key[3]} mix", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        name = f"slo-vs-{axis.replace('_', '-')}-{key[0]}-{key[3]}" + "".join(
            f"-{a.split('_')[0]}{v}" for a, v in zip(fixed, key[4:]) if v is not None) + ".png"
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        paths.append(out / name)
    return paths


def gantt(result, out: str | Path, window_s: tuple[float, float] | None = None) -> Path:
    """GPUs over time for one solve result, coloured by request resolution; missed requests hatched."""
    plt = _plt()
    from matplotlib.patches import Patch

    inst = result.instance
    met = {o.id: o.met for o in result.requests}
    sizes = sorted({r.width for r in inst.requests})
    cmap = plt.get_cmap("viridis", max(2, len(sizes)))
    color = {s: cmap(i) for i, s in enumerate(sizes)}
    lo, hi = window_s if window_s else (0.0, max((a.end_us for _, a in result.assignments), default=1) / 1e6)
    fig, ax = plt.subplots(figsize=(11, 0.45 * inst.cluster.gpus + 1.6), dpi=110)
    for _, a in result.assignments:
        s, e = a.start_us / 1e6, a.end_us / 1e6
        if e < lo or s > hi:
            continue
        r = inst.by_id[a.request]
        for g in a.gpus:
            ax.broken_barh([(s, e - s)], (g - 0.4, 0.8), facecolors=color[r.width], edgecolor="white",
                           linewidth=0.3, hatch=None if met[a.request] else "///")
    R = inst.round_us / 1e6
    k = int(lo // R)
    while k * R <= hi:
        ax.axvline(k * R, color="lightgray", linewidth=0.4, zorder=0)
        k += 1
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.6, inst.cluster.gpus - 0.4)
    ax.set_yticks(range(inst.cluster.gpus))
    ax.set_ylabel("GPU")
    ax.set_xlabel("time (s); thin lines: round boundaries")
    ax.invert_yaxis()
    ax.legend(handles=[Patch(color=color[s], label=f"{s} px") for s in sizes]
              + [Patch(facecolor="white", edgecolor="black", hatch="///", label="missed deadline")],
              fontsize=8, ncol=len(sizes) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    ax.set_title(f"{result.policy} on {inst.name}", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out

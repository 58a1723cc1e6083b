"""`tetriopt bench`: same instances for every policy, the bound on top, tables, JSON and PNGs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import tetriopt
from tetriopt import bench as B
from tetriopt.cli import main


def test_run_same_instances_bound_on_top_and_aggregate():
    pts = B.points(mixes=("skewed",), slo_scales=(1.0, 1.5), rates=(30.0,), seeds=(0, 1), n=25)
    rows = B.run(pts, ["tetriserve", "rssp", "fixed-sp-8", "greedy"], bound=True, jobs=1)
    assert len(rows) == 4 * 5 and not any("error" in r for r in rows)
    by_inst: dict[str, dict] = {}
    for r in rows:
        by_inst.setdefault(r["instance"], {})[r["policy"]] = r
    for inst, rs in by_inst.items():
        assert {r["requests"] for r in rs.values()} == {25}
        assert all(r["met"] <= rs["bound"]["met"] for r in rs.values()), inst
        assert rs["rssp"]["detail"].startswith("rssp:256=")
    agg = B.aggregate(rows)
    assert len(agg) == 2 * 5
    ts = next(a for a in agg if a["policy"] == "tetriserve" and a["slo_scale"] == 1.0)
    vals = [r["slo_attainment"] for r in rows if r["policy"] == "tetriserve" and r["slo_scale"] == 1.0]
    assert ts["slo_attainment"]["mean"] == pytest.approx(sum(vals) / 2)
    assert ts["slo_attainment"]["min"] == min(vals) and ts["seeds"] == [0, 1]
    txt = B.table(agg, axis="slo_scale")
    assert "tetriserve" in txt and "bound" in txt and "1.5" in txt
    assert B.check_dominance(agg, leader="bound") == []
    md = B.markdown_table(agg, "slo_scale", by=("model", "gpus", "mix", "rate"), mean_col=True, bold=("bound",))
    ts_row = next(ln for ln in md.splitlines() if ln.startswith("| tetriserve |"))
    means = [100 * a["slo_attainment"]["mean"] for a in agg if a["policy"] == "tetriserve"]
    assert ts_row.endswith(f" {sum(means) / 2:.1f} |") and "| **bound** |" in md and "rate 30/min**" in md
    assert "errors:\nnone" in B.report(agg, rows, md)


def test_parallel_equals_serial_for_deterministic_policies():
    pts = B.points(slo_scales=(1.2,), rates=(40.0,), seeds=(3,), n=20)
    pols = ["tetriserve-schedule", "fixed-sp-2"]
    key = lambda rs: [(r["instance"], r["policy"], r["met"], r["gpu_hours"]) for r in rs]  # noqa: E731
    assert key(B.run(pts, pols, bound=False, jobs=1)) == key(B.run(pts, pols, bound=False, jobs=2))


def test_unrunnable_policy_is_reported_not_fatal():
    # a 600 ms round: one 2048 px step at degree 1 takes 863 ms
    pts = B.points(mixes=("skewed",), round_ms=(600.0,), rates=(30.0,), n=10, seeds=(0,))
    rows = B.run(pts, ["fixed-sp-1", "fixed-sp-8"], bound=False)
    err = {r["policy"]: r.get("error") for r in rows}
    assert err["fixed-sp-1"] and "longer than the round" in err["fixed-sp-1"] and err["fixed-sp-8"] is None


def test_cli_json_plots_and_bad_input(tmp_path):
    r = CliRunner().invoke(main, ["bench", "-n", "15", "--rates", "40", "--mix", "uniform", "--slo-scales", "1.0,1.2",
                                  "--seeds", "0", "--policies", "tetriserve,fixed-sp-4,rssp", "-j", "1",
                                  "--no-batching", "--no-immediate-start",
                                  "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "img"),
                                  "--gantt-policy", "tetriserve", "--gantt-window-s", "0,60"])
    assert r.exit_code == 0, r.output
    assert "slo_attainment by slo_scale" in r.output and "bound" in r.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert {x["policy"] for x in data["rows"]} == {"tetriserve", "fixed-sp-4", "rssp", "bound"}
    pngs = sorted(p.name for p in (tmp_path / "img").glob("*.png"))
    assert any(p.startswith("slo-vs-slo-scale") for p in pngs) and any(p.startswith("gantt-") for p in pngs)
    from matplotlib.image import imread

    for p in (tmp_path / "img").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(p)[..., :3]
        colours = {tuple(c) for c in img.reshape(-1, 3)[::7].round(2).tolist()}
        # a real figure: of some size, drawn on (not one blank colour), with lines/bars in several colours
        assert img.shape[0] >= 300 and img.shape[1] >= 400, (p.name, img.shape)
        assert len(colours) >= 8 and (img < 0.9).mean() > 0.01, p.name
    for args, field in [(["--policies", "nope"], "policy"), (["--slo-scales", "1,x"], "slo-scales"),
                        (["--mix", "weird"], "mix"), (["--seeds", "a"], "seeds"), (["--model", "nomodel"], "model")]:
        r = CliRunner().invoke(main, ["bench", "-n", "5", "--seeds", "0", "-j", "1", "--no-bound", *args])
        assert r.exit_code == 2 and field in r.output, (args, r.output)


def test_cli_explicit_rssp_mapping_keeps_its_commas():
    r = CliRunner().invoke(main, ["bench", "-n", "8", "--rates", "40", "--mix", "uniform", "--slo-scales", "1.2",
                                  "--seeds", "0", "-j", "1", "--no-bound",
                                  "--policies", "rssp:256=1,512=1,1024=2,2048=8,fixed-sp-8"])
    assert r.exit_code == 0, r.output
    assert "rssp:256=1,512=1,1024=2,2048=8" in r.output and "fixed-sp-8" in r.output


def test_bound_cli(tmp_path):
    from tetriopt.workload import generate

    p = tmp_path / "w.json"
    p.write_text(json.dumps(generate("flux.1-dev-h100", 8, 30, 40.0, mix="skewed", seed=1)))
    r = CliRunner().invoke(main, ["bound", str(p), "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    b = json.loads((tmp_path / "b.json").read_text())
    inst = tetriopt.load_instance(p)
    met = {pol: tetriopt.solve(inst, pol).summary["met"] for pol in ("greedy", "tetriserve", "fixed-sp-2")}
    # an upper bound: at or above what every policy meets, never above the request count
    assert b["requests"] == 30 and max(met.values()) <= b["met_bound"] <= 30, (met, b)
    assert b["slo_attainment_bound"] == pytest.approx(b["met_bound"] / 30, abs=1e-6)
    r = CliRunner().invoke(main, ["bound", str(tmp_path / "missing.json")])
    assert r.exit_code == 2

"""Inputs that used to crash or to be written and then rejected: each gets one line naming the
field and the value, exit code 2, no traceback (NaN, infinities, huge times, deep nesting,
non-UTF-8, options that make instances `solve` cannot run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tetriopt.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = json.loads((ROOT / "instances" / "quickstart.json").read_text())


def run(*args):
    res = CliRunner().invoke(main, list(map(str, args)))
    return res.exit_code, res.output


def one_error_line(out: str, *needles: str) -> None:
    lines = [x for x in out.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert "Traceback" not in out
    for n in needles:
        assert n in lines[0], (n, out)


def with_deadline(value) -> str:
    d = json.loads(json.dumps(QUICK))
    d["requests"][0]["deadline_ms"] = value
    return json.dumps(d)


FILES = [
    ("nan", with_deadline(float("nan")).encode(), "NaN"),
    ("infinity", with_deadline(float("inf")).encode(), "Infinity"),
    ("1e30 ms", with_deadline(1e30).encode(), "deadline_ms"),
    ("deep nesting", ("[" * 100_000 + "]" * 100_000).encode(), "nested"),
    ("not utf-8", b'\xff\xfe{"model": 1}', "UTF-8"),
]


@pytest.mark.parametrize("command", ["solve", "bound"])
@pytest.mark.parametrize("name,raw,needle", FILES, ids=[f[0] for f in FILES])
def test_bad_files(tmp_path, command, name, raw, needle):
    f = tmp_path / "bad.json"
    f.write_bytes(raw)
    code, out = run(command, f)
    assert code == 2, out
    one_error_line(out, needle)


OPTIONS = [
    (["workload", "--rate", "nan"], "--rate"),
    (["workload", "--slo-scale", "nan"], "--slo-scale"),
    (["workload", "--cv", "inf"], "--cv"),
    (["workload", "--islands", "3"], "--islands"),
    (["workload", "--steps", "5000"], "--steps"),
    (["workload", "--targets", "256:nan,512:1,1024:1,2048:1"], "targets"),
    (["workload", "--rate", "1e-300"], "rate"),
    (["solve", ROOT / "instances" / "quickstart.json", "--time-limit-ms", "nan"], "--time-limit-ms"),
    (["bound", ROOT / "instances" / "quickstart.json", "--time-limit-s", "inf"], "--time-limit-s"),
    (["serve", "--time-limit-ms", "nan"], "--time-limit-ms"),
    (["serve", "--time-limit-ms", "inf"], "--time-limit-ms"),
    (["bench", "--time-limit-ms", "nan"], "--time-limit-ms"),
    (["bench", "--time-limit-ms", "-inf"], "--time-limit-ms"),
]


@pytest.mark.parametrize("args,needle", OPTIONS, ids=[" ".join(map(str, a[:3])) for a, _ in OPTIONS])
def test_bad_options(tmp_path, args, needle):
    if args[0] == "workload":
        args = [*args, "-n", "5", "-o", tmp_path / "w.json"]
    code, out = run(*args)
    assert code == 2, out
    one_error_line(out, needle)
    assert not (tmp_path / "w.json").exists()


@pytest.mark.parametrize("islands", [1, 2, 4])
def test_workload_islands_that_solve_accepts(tmp_path, islands):
    out = tmp_path / "w.json"
    assert run("workload", "-n", 5, "--gpus", 8, "--islands", islands, "-o", out)[0] == 0
    code, text = run("solve", out, "--policy", "greedy")
    assert code == 0, text

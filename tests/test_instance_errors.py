"""Bad input: one clear line naming the field and value, exit code 2, no traceback."""

import json
import subprocess
import sys

import pytest

BASE = {"model": "flux.1-dev-h100", "cluster": {"gpus": 8},
        "requests": [{"id": "a", "arrival_ms": 0, "deadline_ms": 3000, "width": 1024, "height": 1024, "steps": 20}]}


def run_solve(tmp_path, data, raw=None):
    f = tmp_path / "inst.json"
    f.write_text(raw if raw is not None else json.dumps(data))
    return subprocess.run([sys.executable, "-m", "tetriopt.cli", "solve", str(f), "--policy", "greedy"],
                          capture_output=True, text=True)


def mutate(fn):
    d = json.loads(json.dumps(BASE))
    fn(d)
    return d


CASES = [
    ("missing field", mutate(lambda d: d["requests"][0].pop("steps")), "steps"),
    ("extra field", mutate(lambda d: d["requests"][0].update(colour="red")), "colour"),
    ("extra top-level field", mutate(lambda d: d.update(foo=1)), "foo"),
    ("negative time", mutate(lambda d: d["requests"][0].update(arrival_ms=-5)), "arrival_ms"),
    ("deadline before arrival", mutate(lambda d: d["requests"][0].update(arrival_ms=500, deadline_ms=100)),
     "deadline_ms"),
    ("unknown model", mutate(lambda d: d.update(model="flux-9000")), "flux-9000"),
    ("resolution outside profile", mutate(lambda d: d["requests"][0].update(width=4096, height=4096)), "4096x4096"),
    ("duplicate ids", mutate(lambda d: d["requests"].append(dict(d["requests"][0]))), "duplicate"),
    ("GPU outside cluster", mutate(lambda d: d["cluster"].update(islands=[[0, 1, 2, 3], [4, 5, 6, 9]])), "9"),
    ("degree not profiled", mutate(lambda d: d.update(degrees=[1, 3])), "degrees"),
    ("wrong type", mutate(lambda d: d["requests"][0].update(steps="many")), "steps"),
]


@pytest.mark.parametrize("name,data,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_instance_exits_2_with_named_field(tmp_path, name, data, needle):
    p = run_solve(tmp_path, data)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert needle in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_non_json(tmp_path):
    p = run_solve(tmp_path, None, raw="{not json")
    assert p.returncode == 2 and "not valid JSON" in p.stderr and "Traceback" not in p.stderr


def test_missing_file(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tetriopt.cli", "solve", str(tmp_path / "nope.json")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_unknown_policy(tmp_path):
    f = tmp_path / "i.json"
    f.write_text(json.dumps(BASE))
    p = subprocess.run([sys.executable, "-m", "tetriopt.cli", "solve", str(f), "--policy", "magic"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "magic" in p.stderr

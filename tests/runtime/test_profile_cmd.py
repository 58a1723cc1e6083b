"""`tetriopt profile` on CPU: real worker processes, output loadable by tetriopt.profile."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.runtime
pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "tetriopt.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_profile_cpu_writes_a_loadable_profile(tmp_path):
    from tetriopt.profile import load_profile

    out = tmp_path / "tiny.json"
    r = _cli("profile", "--device", "cpu", "--gpus", "2", "--resolutions", "64,128", "--batches", "2",
             "--warmup", "1", "--steps", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["degrees"] == [1, 2]
    assert {"hardware", "software", "method"} <= set(data["sources"])
    assert "torch" in data["sources"]["software"]
    p = load_profile(str(out))
    assert [q.tokens for q in p.points] == [16, 64]
    for q in p.points:
        assert set(q.step_us) == {1, 2} and all(v > 0 for v in q.step_us.values())
        assert q.source["1"].startswith("measured")
    assert p.step_us(96, 96, 1) > 0  # interpolation works between measured points
    # --batches: two same-size requests run as one batched assignment, recorded with its source
    assert p.batch_sizes == (1, 2) and "batches of 2" in data["sources"]["method"]
    for q in p.points:
        assert set(q.batch_us) == {(2, 1), (2, 2)} and all(v > 0 for v in q.batch_us.values())
        assert q.batch_source["2:1"].startswith("measured: tetriopt profile --batches")
    assert p.default_round_us > 0


@pytest.mark.parametrize("args,field", [
    (["--gpus", "3"], "gpus"),
    (["--resolutions", "60"], "resolutions"),
    (["--model", "flux"], "path"),
    (["--batches", "1"], "batches"),
])
def test_profile_bad_input_exits_2(tmp_path, args, field):
    r = _cli("profile", *args, "--out", str(tmp_path / "x.json"), timeout=60)
    assert r.returncode == 2
    assert field in r.stderr and "Traceback" not in r.stderr

"""benchmarks/gpu_check.py --dry-run: the prepared GPU check runs its code paths on CPU with tiny
models and stays green (issue 14 item 9), so it is ready whenever a GPU is lent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.runtime, pytest.mark.slow]
pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("fastapi")

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "check.jsonl"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    by_part = {}
    for r in rows:
        by_part.setdefault(r["part"], []).append(r)
    assert set(by_part) == {"env", "a", "b", "c", "d", "summary"}
    a = by_part["a"][0]
    assert a["ratio_eager"] > 0 and a["ratio_compiled"] > 0
    assert [r["backend"] for r in by_part["b"] if "skipped" not in r][0] == "own"
    assert all(r["max_abs_diff"] <= r["tolerance"] for r in by_part["b"] if "skipped" not in r)
    assert by_part["c"][0]["distinct"] == 2 and by_part["c"][0]["executor_failures"] == 0
    assert by_part["d"][0]["vae_decode_ms"] > 0
    assert by_part["summary"][0]["ok"] is True

    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--parts", "a,x"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["parts: x is not one of a,b,c,d"]

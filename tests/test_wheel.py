"""The built wheel works installed: not editable, in a fresh venv, run away from the source tree.

An editable install finds profiles and sources next to the package; an installed wheel has
only what pyproject.toml packages (the profiles as package data, found through importlib.resources).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def run(*args, cwd, env=None):
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, f"{args}: {p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p


def test_wheel_installed_in_a_fresh_venv_solves_the_quickstart(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT), cwd=tmp_path)
    wheels = list(dist.glob("tetriopt-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    run(str(py), "-m", "pip", "install", "-q", str(wheels[0]), cwd=tmp_path)
    # away from the repository: no src/ or models/ on any path
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TETRIOPT_MODELS")}
    where = run(str(py), "-c", "import tetriopt, tetriopt.profile as p; print(tetriopt.__file__); "
                               "print(','.join(p.available_profiles()))", cwd=work, env=env).stdout.split()
    assert str(env_dir) in where[0] and str(ROOT) not in where[0]
    assert set(where[1].split(",")) >= {"flux.1-dev-h100", "flux.1-dev-h200", "sd3-medium-a40", "sd3-medium-h200"}
    out = work / "r.json"
    run(str(env_dir / "bin" / "tetriopt"), "solve", str(ROOT / "instances" / "quickstart.json"), "--policy", "cpsat",
        "--no-timings", "--deterministic", "--json", str(out), cwd=work, env=env)
    installed = json.loads(out.read_text())
    # the same plan as the source tree's
    ref = subprocess.run([sys.executable, "-m", "tetriopt.cli", "solve", str(ROOT / "instances" / "quickstart.json"),
                          "--policy", "cpsat", "--no-timings", "--deterministic", "--json", "-"],
                         capture_output=True, text=True, cwd=ROOT)
    assert ref.returncode == 0, ref.stderr
    assert installed == json.loads(ref.stdout)
    assert installed["summary"]["requests"] == 12

"""The built wheel works installed: not editable, in a fresh venv, run away from the source tree.

An editable install finds profiles and sources next to the package; an installed wheel has
only what pyproject.toml packages (the profiles as package data, found through importlib.resources).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tetriopt.server.probe import free_port, wait_ready

from .conftest import ROOT

pytestmark = pytest.mark.slow


def run(*args, cwd, env=None):
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, f"{args}: {p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path                 # a directory away from the repository
    env: dict[str, str]        # without PYTHONPATH / TETRIOPT_MODELS


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """The wheel built from the tree and installed (not editable) in a fresh venv, once per module."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT), cwd=tmp_path)
    wheels = list(dist.glob("tetriopt-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    run(str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheels[0]), cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TETRIOPT_MODELS")}
    return Installed(env_dir, work, env)


def test_wheel_installed_in_a_fresh_venv_solves_the_quickstart(installed):
    env_dir, work, env = installed.venv, installed.work, installed.env
    py = env_dir / "bin" / "python"
    # away from the repository: no src/ or models/ on any path
    where = run(str(py), "-c", "import tetriopt, tetriopt.profile as p; print(tetriopt.__file__); "
                               "print(','.join(p.available_profiles()))", cwd=work, env=env).stdout.split()
    assert str(env_dir) in where[0] and str(ROOT) not in where[0]
    assert set(where[1].split(",")) >= {"flux.1-dev-h100", "flux.1-dev-h200", "sd3-medium-a40", "sd3-medium-h200"}
    out = work / "r.json"
    run(str(env_dir / "bin" / "tetriopt"), "solve", str(ROOT / "instances" / "quickstart.json"), "--policy", "cpsat",
        "--no-timings", "--deterministic", "--json", str(out), cwd=work, env=env)
    result = json.loads(out.read_text())
    # the same plan as the source tree's
    ref = subprocess.run([sys.executable, "-m", "tetriopt.cli", "solve", str(ROOT / "instances" / "quickstart.json"),
                          "--policy", "cpsat", "--no-timings", "--deterministic", "--json", "-"],
                         capture_output=True, text=True, cwd=ROOT)
    assert ref.returncode == 0, ref.stderr
    assert result == json.loads(ref.stdout)
    assert result["summary"]["requests"] == 12


def test_wheel_installed_serves_with_the_cpu_executor(installed, tmp_path):
    """`tetriopt serve --executor cpu` from the installed wheel: the runtime is found as the installed
    tetriopt_runtime package (not a source directory), reaches readiness and makes an image.

    torch and diffusers are the test venv's: a .pth file appends its site-packages to the fresh
    venv's path (after the fresh venv's own, so tetriopt itself is still the installed wheel, and
    without running that directory's .pth files, so the editable install stays out)."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    py = installed.venv / "bin" / "python"
    site = run(str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
               cwd=installed.work, env=installed.env).stdout.strip()
    heavy = Path(sysconfig.get_paths()["purelib"])
    Path(site, "test-venv-heavy-deps.pth").write_text(f"{heavy}\n")
    where = run(str(py), "-c", "import tetriopt, tetriopt_runtime, torch; print(tetriopt.__file__); "
                               "print(tetriopt_runtime.__file__)", cwd=installed.work, env=installed.env)
    assert all(str(installed.venv) in w and str(ROOT) not in w for w in where.stdout.split())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(installed.venv / "bin" / "tetriopt"), "serve", "--executor", "cpu",
                             "--model", "tiny-flux", "--gpus", "2", "--policy", "greedy", "--store", "",
                             "--port", str(port)], cwd=installed.work, env=installed.env, stdout=log, stderr=log)
    try:
        wait_ready(url, proc, 240, lambda: (tmp_path / "serve.log").read_text(), every_s=0.2)
        r = httpx.post(url + "/v1/images/generations", timeout=240,
                       json={"prompt": "a cat", "size": "256x256", "steps": 2, "slo_ms": 200000})
        assert r.status_code == 200, r.text
        assert r.json()["data"][0]["b64_json"]
        assert httpx.get(url + "/v1/stats", timeout=10).json()["executor"] == "cpu"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

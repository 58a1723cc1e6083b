"""The package list in pyproject.toml must name every package under src/tetriopt (it is explicit
because runtime/ is mapped to the import name tetriopt_runtime)."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.runtime
tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert cfg["package-dir"]["tetriopt_runtime"] == "runtime"
    assert (ROOT / "runtime" / "__init__.py").is_file()

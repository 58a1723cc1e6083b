"""GET /dashboard in a real headless Chromium (Debian's `chromium`): the page loads without console
errors and draws the requests this test sent (DOM check); a screenshot is kept as an artifact."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from serverkit import poll

pytestmark = pytest.mark.server
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TETRIOPT_TEST_ARTIFACTS", "out/test-artifacts"))


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=4000", "--window-size=1200,900", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs Debian's package)")
def test_dashboard_in_headless_chromium(make_server, tmp_path):
    s = make_server(api_key="k3y")
    h = {"Authorization": "Bearer k3y"}
    with httpx.Client(base_url=s.url, timeout=30, headers=h) as c:
        body = {"prompt": "p", "size": "1024x1024", "steps": 300, "slo_ms": 60000}
        ids = [c.post("/v1/jobs", json={**body, "size": size}).json()["id"] for size in ("1024x1024", "512x512")]
        poll(lambda: all(c.get(f"/v1/jobs/{j}").json()["steps_done"] > 0 for j in ids))
        sched = c.get("/v1/schedule").json()
        assert {a["job"] for r in sched["rounds"] for a in r["assignments"]} >= set(ids)
        url = f"{s.url}/dashboard#key=k3y"
        dom = _chromium(tmp_path, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
        assert not [x for x in console if re.search(r"error|uncaught|failed", x, re.I)], console
        html = dom.stdout
        assert 'id="errors"></div>' in html, html[html.find('id="errors"'):][:300]
        for j in ids:  # drawn in the Gantt chart (rects carry data-job) and listed in the queue table
            assert f'data-job="{j}"' in html
            assert html.count(j) >= 3
        assert "1024x1024" in html and "512x512" in html and "GPU 3" in html
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        r = _chromium(tmp_path, f"--screenshot={shot.resolve()}", url)
        assert r.returncode == 0 and shot.stat().st_size > 10_000, r.stderr[-2000:]
        for j in ids:
            c.delete(f"/v1/jobs/{j}")

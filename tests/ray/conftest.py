"""A real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`) and the HTTP
front-end on loopback driving one node actor per simulated node (sim executors)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("fastapi")

from tetriopt.cluster.ray_serve import create_cluster_app  # noqa: E402
from tetriopt.cluster.testbed import NODE_ARGS, ServerThread, local_ray_cluster, stop_ray  # noqa: E402,F401
from tetriopt.server.config import ServerConfig  # noqa: E402

FAST_PROFILE = str(Path(__file__).resolve().parents[1] / "server" / "fast-profile.json")
# greedy planning keeps 3 node actors light on 2 cores; rounds of 60 ms, steps of 4-24 ms
CFG = ServerConfig(gpus=4, profile=FAST_PROFILE, port=0, policy="greedy", default_steps=8,
                   default_size="512x512", job_ttl_s=120, drain_timeout_s=60, max_queue=10_000)


class FrontEnd(ServerThread):
    """The Ray front-end (one node actor per simulated node) on a thread."""

    def __init__(self, nodes: int, router: str):
        super().__init__(CFG, lambda c, on_drained=None: create_cluster_app(c, nodes, router, on_drained=on_drained))


@pytest.fixture(scope="package")
def ray_cluster():
    """A head (no node slot: the driver and the front-end live there) and 3 simulated GPU nodes."""
    c, workers = local_ray_cluster(3)
    yield c, workers
    stop_ray(c)


@pytest.fixture(scope="package")
def front(ray_cluster):
    fe = FrontEnd(3, "deadline-aware")
    yield fe
    fe.stop()


def replace_cfg(**kw) -> ServerConfig:
    return replace(CFG, **kw)

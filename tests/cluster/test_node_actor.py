"""The node actor's contract with the front-end, on the real node service (no Ray needed):
a job moves only if no step of it has run or been dispatched, and then says so exactly once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from tetriopt.cluster.ray_node import NodeActor  # noqa: E402
from tetriopt.server.config import ServerConfig  # noqa: E402
from tetriopt.server.requests import GenerationRequest  # noqa: E402

FAST = str(Path(__file__).resolve().parents[1] / "server" / "fast-profile.json")


def request(steps: int = 20) -> GenerationRequest:
    return GenerationRequest(prompt="p", n=1, width=1024, height=1024, response_format="b64_json", model=None,
                             steps=steps, slo_ms=None, deadline_ms=time.time() * 1e3 + 60_000, seed=1)


def test_take_back_only_before_any_step_and_result_says_moved():
    async def scenario():
        node = NodeActor(0, ServerConfig(gpus=2, profile=FAST, policy="greedy", port=0))
        await node.view()  # starts the node's service
        await node.submit("a", request())
        running = asyncio.ensure_future(node.result("a"))
        t0 = time.monotonic()
        while not any(t["location"] for t in (await node.view())["tasks"]):
            assert time.monotonic() - t0 < 10, "job a never dispatched"
            await asyncio.sleep(0.005)
        assert await node.take_back("a") is False  # dispatched: it stays
        assert (await running)["status"] == "succeeded"
        # a job submitted and taken back before the next round is planned never runs here
        await node.submit("b", request())
        waiting = asyncio.ensure_future(node.result("b"))
        assert await node.take_back("b") is True
        assert await node.take_back("b") is False
        assert (await waiting)["status"] == "moved"
        assert (await node.result("b"))["status"] == "unknown"  # told once; a new submit would run it
        stats = (await node.view())["stats"]
        await node.stop()
        return stats

    stats = asyncio.run(scenario())
    assert stats["images_finished"] == 1

"""Run a function in N real gloo processes with a deadline, so a broken collective fails the test
instead of hanging CI.

Results travel as `torch.save` bytes, not tensors: torch.multiprocessing queues pass tensors as
shared-memory file descriptors that the parent fetches from the child, which fails with
FileNotFoundError (resource_sharer) when the child has already exited.
"""

from __future__ import annotations

import io
import socket
import traceback
from datetime import timedelta

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn, rank, world, port, out, args):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=30))
        buf = io.BytesIO()
        torch.save(fn(rank, world, *args), buf)
        out.put((rank, "ok", buf.getvalue()))
    except BaseException:
        out.put((rank, "error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(fn, world: int, *args, timeout: float = 90.0) -> list:
    """fn(rank, world, *args) in `world` spawned processes; returns results by rank."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(fn, r, world, port, out, args), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    try:
        for _ in range(world):
            rank, status, val = out.get(timeout=timeout)
            if status != "ok":
                raise AssertionError(f"rank {rank} failed:\n{val}")
            results[rank] = torch.load(io.BytesIO(val), weights_only=False)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    return [results[r] for r in range(world)]

"""Process groups for every GPU set the scheduler may choose, made once at start-up.

Why once: `dist.new_group` is a collective over the whole world (every rank must call it, in the
same order), so creating groups per step would stall every GPU for every set change. The
aligned power-of-two blocks form a small laminar family (2*world-1 sets), cheap to hold.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch.distributed as dist

from .plan import aligned_blocks


def build_groups(world: int, backend: str, timeout_s: float, singletons: bool = False) -> dict[Any, object]:
    """One group per aligned block (None for single ranks: degree 1 needs no communication).

    Every group gets a timeout: a collective that fails after posting its sends can otherwise
    leave the next one hung forever. With `singletons`, also an explicit one-rank group per rank
    under the key ("ring", rank): xfuser's attention needs one as its ring group (Ulysses only).
    """
    out: dict[Any, object] = {}
    timeout = timedelta(seconds=timeout_s)
    for ranks in aligned_blocks(world):
        if len(ranks) == 1:
            out[ranks] = None
            continue
        # new_group must be entered by all ranks, even those not in the set
        out[ranks] = dist.new_group(list(ranks), timeout=timeout, backend=backend)
    if singletons:
        for r in range(world):
            out[("ring", r)] = dist.new_group([r], timeout=timeout, backend=backend)
    return out

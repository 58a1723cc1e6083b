"""Process groups for every GPU set the scheduler may choose, made once at start-up.

Why once: `dist.new_group` is a collective over the whole world (every rank must call it, in the
same order), so creating groups per step would stall every GPU for every set change. The
aligned power-of-two blocks form a small laminar family (2*world-1 sets), cheap to hold.
"""

from __future__ import annotations

from datetime import timedelta

import torch.distributed as dist

from .plan import aligned_blocks


def build_groups(world: int, backend: str, timeout_s: float) -> dict[tuple[int, ...], object]:
    """One group per aligned block (None for single ranks: degree 1 needs no communication).

    Every group gets a timeout: a collective that fails after posting its sends can otherwise
    leave the next one hung forever.
    """
    out: dict[tuple[int, ...], object] = {}
    for ranks in aligned_blocks(world):
        if len(ranks) == 1:
            out[ranks] = None
            continue
        # new_group must be entered by all ranks, even those not in the set
        out[ranks] = dist.new_group(list(ranks), timeout=timedelta(seconds=timeout_s), backend=backend)
    return out

"""The scheduler's clock: microseconds since the server started, on the monotonic clock.

Plans, arrivals, deadlines and finishes all use it, so a plan's times map to wall time
without drift and the server's figures compare with `tetriopt solve`'s simulated clock.
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self, t0: float | None = None):
        self.t0 = time.monotonic() if t0 is None else t0
        self._epoch0 = time.time() - (time.monotonic() - self.t0)

    def now_us(self) -> int:
        return int((time.monotonic() - self.t0) * 1e6)

    def monotonic_at(self, us: int) -> float:
        """The time.monotonic() value of a point on this clock."""
        return self.t0 + us / 1e6

    def from_epoch_ms(self, epoch_ms: float) -> int:
        """A Unix-epoch time in ms (e.g. a client's absolute deadline) on this clock."""
        return int((epoch_ms / 1e3 - self._epoch0) * 1e6)

    def to_epoch_s(self, us: int) -> float:
        return self._epoch0 + us / 1e6

    def sleep_until(self, us: int) -> None:
        """Block the calling thread until the clock reads `us` (returns at once if past)."""
        left = self.monotonic_at(us) - time.monotonic()
        if left > 0:
            time.sleep(left)

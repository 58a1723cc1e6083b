"""Time units. Inside, every time is an integer number of microseconds; files, the command line
and the HTTP API speak milliseconds (and GPU-hours); solvers take seconds. Conversions live here."""

from __future__ import annotations

US_PER_MS = 1000
US_PER_S = 1_000_000
US_PER_HOUR = 3_600_000_000


def ms_to_us(ms: float) -> int:
    """Milliseconds (from a file, a flag, a client) to the integer microseconds used inside."""
    return int(round(ms * 1000.0))


def us_to_ms(us: float) -> float:
    return us / 1e3


def us_to_s(us: float) -> float:
    return us / 1e6


def ms_to_s(ms: float) -> float:
    return ms / 1e3


def gpu_hours(gpu_us: float) -> float:
    """GPU-microseconds to GPU-hours."""
    return gpu_us / US_PER_HOUR

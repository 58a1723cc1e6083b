"""Command-line number types that reject NaN and infinities, which click's ranges let through
(every comparison with NaN is false), with the one-line InputError every command prints."""

from __future__ import annotations

import math

import click

from ..errors import InputError


class FiniteFloat(click.ParamType):
    """A finite float in [lo, hi] (either end optional; `open_lo` excludes lo itself)."""

    name = "float"

    def __init__(self, field: str, lo: float | None = None, hi: float | None = None, open_lo: bool = False):
        self.field, self.lo, self.hi, self.open_lo = field, lo, hi, open_lo

    def convert(self, value, param, ctx) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InputError(self.field, value, "not a number") from None
        if not math.isfinite(v):
            raise InputError(self.field, value, "must be a finite number")
        if self.lo is not None and (v < self.lo or (self.open_lo and v == self.lo)):
            raise InputError(self.field, value, f"must be {'above' if self.open_lo else 'at least'} {self.lo:g}")
        if self.hi is not None and v > self.hi:
            raise InputError(self.field, value, f"must be at most {self.hi:g}")
        return v


class BoundedInt(click.ParamType):
    """An integer in [lo, hi], reported as one InputError line."""

    name = "integer"

    def __init__(self, field: str, lo: int | None = None, hi: int | None = None):
        self.field, self.lo, self.hi = field, lo, hi

    def convert(self, value, param, ctx) -> int:
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise InputError(self.field, value, "not an integer") from None
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise InputError(self.field, value, f"must be in {self.lo if self.lo is not None else '-inf'}.."
                                                f"{self.hi if self.hi is not None else 'inf'}")
        return v

"""Cost profiles: per-step latency by resolution and SP degree, with where each number came from.

Times are kept in integer microseconds so that every policy, the MIP backends and the
validator agree to the last unit (CP-SAT needs integers; floats would make plans drift).
Resolutions between profiled points are interpolated linearly in token count, per degree,
because DiT step cost is a function of sequence length, not of the aspect ratio.

A step may carry a batch of several same-size requests (their latents stacked, timesteps as a
per-sample vector): a point may list `batches: {"B": {"step_ms": {degree: ms}, "source": {...}}}`
for batch sizes B > 1. Small sizes are launch-bound, so a batch of them costs little more than
one request; every point must list the same batch sizes, and a profile without any allows batch 1
only.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import InputError
from .units import ms_to_us

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PIXELS_PER_TOKEN = 256  # FLUX and SD3: 8x VAE downsampling, 2x2 patches -> 16x16 px per token


def tokens(width: int, height: int, pixels_per_token: int = PIXELS_PER_TOKEN) -> int:
    return (width * height) // pixels_per_token


@dataclass(frozen=True)
class ProfilePoint:
    """One profiled resolution: per-step latency (us) for each SP degree."""

    tokens: int
    width: int
    height: int
    step_us: Mapping[int, int]
    vae_decode_us: int
    source: Mapping[str, str] = field(default_factory=dict)
    batch_us: Mapping[tuple[int, int], int] = field(default_factory=dict)  # (batch > 1, degree) -> us
    batch_source: Mapping[str, str] = field(default_factory=dict)  # "B:degree" -> source

    def us(self, degree: int, batch: int = 1) -> int:
        return self.step_us[degree] if batch == 1 else self.batch_us[(batch, degree)]


@dataclass(frozen=True)
class CostProfile:
    """A model on a GPU kind: how long one denoising step takes at each (tokens, degree)."""

    name: str
    model: str
    gpu: str
    degrees: tuple[int, ...]
    points: tuple[ProfilePoint, ...]  # sorted by tokens
    text_encode_us: int
    default_round_us: int
    pixels_per_token: int = PIXELS_PER_TOKEN
    sources: Mapping[str, str] = field(default_factory=dict)
    path: str = ""
    batch_sizes: tuple[int, ...] = (1,)  # batch sizes with a cost at every point
    _memo: dict = field(default_factory=dict, compare=False, repr=False)  # (tokens, degree, batch) or (w, h, 'decode') -> us

    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    @property
    def min_tokens(self) -> int:
        return self.points[0].tokens

    @property
    def max_tokens(self) -> int:
        return self.points[-1].tokens

    def covers(self, width: int, height: int) -> bool:
        t = tokens(width, height, self.pixels_per_token)
        return self.min_tokens <= t <= self.max_tokens

    def _interp(self, t: int, value) -> int:
        keys = [p.tokens for p in self.points]
        if not keys[0] <= t <= keys[-1]:
            raise InputError(
                "resolution", t,
                f"{t} tokens is outside the profile {self.name!r} "
                f"({keys[0]}..{keys[-1]} tokens)")
        j = bisect.bisect_left(keys, t)
        if keys[j] == t:
            return value(self.points[j])
        lo, hi = self.points[j - 1], self.points[j]
        a, b = value(lo), value(hi)
        frac = (t - lo.tokens) / (hi.tokens - lo.tokens)
        return int(round(a + (b - a) * frac))

    def step_us(self, width: int, height: int, degree: int, batch: int = 1) -> int:
        """Latency of one denoising step at this resolution on `degree` GPUs for `batch` requests."""
        t = tokens(width, height, self.pixels_per_token)
        hit = self._memo.get((t, degree, batch))
        if hit is not None:
            return hit
        if degree not in self.degrees:
            raise InputError("degree", degree, f"not a degree of profile {self.name!r} {list(self.degrees)}")
        if batch not in self.batch_sizes:
            raise InputError("batch", batch, f"not a batch size of profile {self.name!r} {list(self.batch_sizes)}")
        self._memo[(t, degree, batch)] = v = self._interp(t, lambda p: p.us(degree, batch))
        return v

    def vae_decode_us(self, width: int, height: int) -> int:
        hit = self._memo.get((width, height, "decode"))  # asked for every request in every round's hot loops
        if hit is None:
            hit = self._memo[(width, height, "decode")] = self._interp(tokens(width, height, self.pixels_per_token),
                                                                       lambda p: p.vae_decode_us)
        return hit


def _parse(data: Mapping[str, Any], path: str) -> CostProfile:
    try:
        degrees = tuple(sorted(int(d) for d in data["degrees"]))
        points = []
        for i, p in enumerate(data["points"]):
            step = _step_table(p["step_ms"], degrees, f"points[{i}].step_ms")
            w, h = int(p["width"]), int(p["height"])
            ppt = int(data.get("pixels_per_token", PIXELS_PER_TOKEN))
            batch_us, batch_src = _parse_batches(p.get("batches", {}), degrees, f"points[{i}].batches")
            points.append(ProfilePoint(
                tokens=tokens(w, h, ppt), width=w, height=h, step_us=step,
                vae_decode_us=ms_to_us(float(p.get("vae_decode_ms", 0.0))),
                source=dict(p.get("source", {})), batch_us=batch_us, batch_source=batch_src))
        points.sort(key=lambda p: p.tokens)
        if len({p.tokens for p in points}) != len(points):
            raise InputError("points", [p.tokens for p in points], "two points with the same token count")
        sizes = {tuple(sorted({b for b, _ in p.batch_us})) for p in points}
        if len(sizes) > 1:
            raise InputError("points.batches", sorted(sizes), "every point must list the same batch sizes")
        return CostProfile(
            name=str(data["name"]), model=str(data["model"]), gpu=str(data["gpu"]),
            degrees=degrees, points=tuple(points),
            text_encode_us=ms_to_us(float(data.get("text_encode_ms", 0.0))),
            default_round_us=ms_to_us(float(data["default_round_ms"])),
            pixels_per_token=int(data.get("pixels_per_token", PIXELS_PER_TOKEN)),
            sources=dict(data.get("sources", {})), path=path,
            batch_sizes=(1, *(sizes.pop() if sizes else ())))
    except KeyError as e:
        raise InputError(f"profile.{e.args[0]}", None, f"missing in profile {path}") from None
    except (TypeError, ValueError) as e:
        raise InputError("profile", path, f"malformed profile: {e}") from None


def _step_table(raw: Mapping[str, Any], degrees: tuple[int, ...], where: str) -> dict[int, int]:
    """{degree: us} from a `step_ms` table: every degree present, every latency positive."""
    step = {int(k): ms_to_us(float(v)) for k, v in raw.items()}
    missing = [d for d in degrees if d not in step]
    if missing:
        raise InputError(where, missing, "missing degrees")
    if any(v <= 0 for v in step.values()):
        raise InputError(where, dict(raw), "step latencies must be positive")
    return step


def _parse_batches(raw: Mapping[str, Any], degrees: tuple[int, ...], where: str
                   ) -> tuple[dict[tuple[int, int], int], dict[str, str]]:
    """{(batch, degree): us} and {"batch:degree": source} of one point's `batches` entry."""
    out: dict[tuple[int, int], int] = {}
    src: dict[str, str] = {}
    for b_raw, entry in raw.items():
        b = int(b_raw)
        if b < 2:
            raise InputError(f"{where}.{b_raw}", b_raw, "batch sizes listed must be at least 2")
        step = _step_table(entry["step_ms"], degrees, f"{where}.{b_raw}.step_ms")
        for d in degrees:
            out[(b, d)] = step[d]
        for d, text in entry.get("source", {}).items():
            src[f"{b}:{d}"] = str(text)
    return out, src


def profiles_dir() -> Traversable:
    """Where named profiles live: $TETRIOPT_MODELS, else the package's profiles/ (package data, found
    through importlib.resources so that an installed wheel has them; models/derive.py writes them
    beside the human-facing copies in models/)."""
    env = os.environ.get("TETRIOPT_MODELS")
    if env:
        return Path(env)
    return resources.files("tetriopt") / "profiles"


def available_profiles() -> list[str]:
    d = profiles_dir()
    return sorted(p.name[:-len(".json")] for p in d.iterdir() if p.name.endswith(".json")) if d.is_dir() else []


@lru_cache(maxsize=64)
def _load_cached(source: Traversable) -> CostProfile:
    try:
        data = json.loads(source.read_text())
    except json.JSONDecodeError as e:
        raise InputError("model", str(source), f"profile is not valid JSON: {e}") from None
    return _parse(data, str(source))


def load_profile(name_or_path: str, base_dir: str | os.PathLike | None = None) -> CostProfile:
    """A profile by name (a file stem in `profiles_dir()`) or by path (absolute or relative to base_dir)."""
    candidates = []
    p = Path(name_or_path)
    if p.suffix == ".json":
        candidates.append(p if p.is_absolute() or base_dir is None else Path(base_dir) / p)
        candidates.append(p)
    named = profiles_dir() / f"{name_or_path}.json"
    for c in candidates:
        if c.is_file():
            return _load_cached(c.resolve())
    if named.is_file():
        return _load_cached(named)
    raise InputError("model", name_or_path,
                     f"unknown model profile; known: {', '.join(available_profiles()) or 'none'}")

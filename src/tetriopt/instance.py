"""Problem data: the cluster, the requests and the whole workload, validated on load."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from .errors import InputError
from .gpusets import aligned_sets
from .profile import CostProfile, load_profile
from .units import ms_to_us, us_to_ms


@dataclass(frozen=True)
class Cluster:
    """GPUs 0..gpus-1; islands are groups that share a fast link (a set never straddles a slow one)."""

    gpus: int
    islands: tuple[tuple[int, ...], ...]

    def sets(self, degree: int) -> tuple[tuple[int, ...], ...]:
        return aligned_sets(self.islands, degree)


@dataclass(frozen=True)
class Request:
    id: str
    arrival_us: int
    deadline_us: int
    width: int
    height: int
    steps: int
    prompt: str = ""


@dataclass(frozen=True)
class Instance:
    profile: CostProfile
    cluster: Cluster
    round_us: int
    degrees: tuple[int, ...]
    requests: tuple[Request, ...]
    name: str = ""
    nodes: int = 1  # identical nodes of `cluster` each (cluster.nodes); SP never crosses a node

    @cached_property
    def by_id(self) -> dict[str, Request]:
        return {r.id: r for r in self.requests}

    def step_us(self, r: Request, degree: int) -> int:
        return self.profile.step_us(r.width, r.height, degree)


@lru_cache(maxsize=1)
def instance_schema() -> dict:
    return json.loads(resources.files("tetriopt").joinpath("schema/instance.schema.json").read_text())


def _path_of(err: jsonschema.ValidationError) -> str:
    parts = []
    for p in err.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def make_cluster(gpus: int, islands: Any = None) -> Cluster:
    if islands is None:
        return Cluster(gpus, (tuple(range(gpus)),))
    seen: set[int] = set()
    for i, isl in enumerate(islands):
        for g in isl:
            if g >= gpus or g < 0:
                raise InputError(f"cluster.islands[{i}]", g, f"GPU id outside the cluster of {gpus} GPUs")
            if g in seen:
                raise InputError(f"cluster.islands[{i}]", g, "GPU listed in two islands")
            seen.add(g)
    if len(seen) != gpus:
        missing = sorted(set(range(gpus)) - seen)
        raise InputError("cluster.islands", missing, "islands must cover every GPU; these are in none")
    return Cluster(gpus, tuple(tuple(int(g) for g in isl) for isl in islands))


def parse_instance(data: Any, base_dir: str | Path | None = None, name: str = "") -> Instance:
    """Validate against the JSON Schema, then the cross-field rules the schema cannot express."""
    if not isinstance(data, Mapping):
        raise InputError("instance", type(data).__name__, "must be a JSON object")
    errors = sorted(jsonschema.Draft202012Validator(instance_schema()).iter_errors(data),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        e = errors[0]
        if e.validator == "additionalProperties":
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            raise InputError(_path_of(e) if e.absolute_path else "instance", extra, "unknown field(s)")
        if e.validator == "required":
            raise InputError(_path_of(e), e.message.split("'")[1] if "'" in e.message else e.message,
                             "missing required field")
        raise InputError(_path_of(e), e.instance, e.message)
    profile = load_profile(data["model"], base_dir)
    c = data["cluster"]
    cluster = make_cluster(int(c["gpus"]), c.get("islands"))
    degrees = tuple(sorted(set(data.get("degrees", [d for d in profile.degrees if d <= cluster.gpus]))))
    for d in degrees:
        if d not in profile.degrees:
            raise InputError("degrees", d, f"not profiled in {profile.name!r} (has {list(profile.degrees)})")
        if not cluster.sets(d):
            raise InputError("degrees", d, f"no aligned GPU set of that size fits cluster {c}")
    round_ms = float(data.get("round_ms", us_to_ms(profile.default_round_us)))
    if not math.isfinite(round_ms):
        raise InputError("round_ms", round_ms, "must be a finite number of ms")
    round_us = ms_to_us(round_ms)
    reqs, ids = [], set()
    for i, r in enumerate(data["requests"]):
        for key in ("arrival_ms", "deadline_ms"):  # NaN passes every JSON Schema comparison
            if not math.isfinite(r[key]):
                raise InputError(f"requests[{i}].{key}", r[key], "must be a finite number of ms")
        if r["id"] in ids:
            raise InputError(f"requests[{i}].id", r["id"], "duplicate request id")
        ids.add(r["id"])
        if r["deadline_ms"] < r["arrival_ms"]:
            raise InputError(f"requests[{i}].deadline_ms", r["deadline_ms"],
                             f"deadline before arrival ({r['arrival_ms']})")
        if not profile.covers(r["width"], r["height"]):
            raise InputError(f"requests[{i}]", f"{r['width']}x{r['height']}",
                             f"resolution outside profile {profile.name!r} "
                             f"({profile.points[0].width}x{profile.points[0].height}.."
                             f"{profile.points[-1].width}x{profile.points[-1].height} in tokens)")
        # its last step and VAE decode (and its text encode, for a single step) run in one round
        last = (profile.vae_decode_us(r["width"], r["height"])
                + (profile.text_encode_us if int(r["steps"]) == 1 else 0))
        fastest = min(profile.step_us(r["width"], r["height"], d) for d in degrees if cluster.sets(d)) + last
        if fastest > round_us:
            raise InputError("round_ms", us_to_ms(round_us),
                             f"shorter than the last step plus the VAE decode of requests[{i}] "
                             f"({r['width']}x{r['height']}) at any allowed degree ({us_to_ms(fastest):g} ms at best)")
        reqs.append(Request(id=str(r["id"]), arrival_us=ms_to_us(r["arrival_ms"]),
                            deadline_us=ms_to_us(r["deadline_ms"]), width=int(r["width"]),
                            height=int(r["height"]), steps=int(r["steps"]), prompt=r.get("prompt", "")))
    return Instance(profile=profile, cluster=cluster, round_us=round_us, degrees=degrees,
                    requests=tuple(reqs), name=name, nodes=int(c.get("nodes", 1)))


def _no_constant(name: str):
    raise InputError("instance", name, "not valid JSON: NaN and Infinity are not numbers in JSON")


def load_json(path: str | Path, field: str = "instance") -> Any:
    """Strict JSON from a file: UTF-8, no NaN/Infinity, bounded nesting; InputError otherwise."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise InputError(field, str(path), f"cannot read file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise InputError(field, str(path), f"not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InputError(field, str(path), f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise InputError(field, str(path), "not valid JSON: nested too deeply") from None


def load_instance(path: str | Path) -> Instance:
    """Read and validate an instance file; raises InputError naming the bad field and value."""
    p = Path(path)
    return parse_instance(load_json(p), base_dir=p.parent, name=p.stem)

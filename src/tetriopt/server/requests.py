"""Parsing an image request: OpenAI Images fields, the vLLM-Omni/SGLang names, tetriopt's own.

Everything is checked by hand so that each refusal names its field and the value it got, in
the OpenAI error shape (FastAPI's own 422s name neither in a form OpenAI clients show). Types
are strict: a float where an integer belongs, or a number where a string belongs, is refused
rather than coerced or replaced by a default (only JSON null means "default").
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, invalid

# OpenAI Images fields that are accepted but have no effect on a DiT server (checked as strings)
IGNORED_STRINGS = {"style", "user", "background", "moderation", "safety_identifier"}
OPENAI_FIELDS = {"prompt", "n", "size", "response_format", "model", "quality", "output_format",
                 "output_compression", "partial_images", "stream"} | IGNORED_STRINGS
# vLLM-Omni / SGLang names (num_inference_steps is the same as our `steps`)
ECOSYSTEM_FIELDS = {"num_inference_steps", "seed", "guidance_scale", "negative_prompt"}
TETRIOPT_FIELDS = {"slo_ms", "deadline_ms", "steps"}
KNOWN_FIELDS = OPENAI_FIELDS | ECOSYSTEM_FIELDS | TETRIOPT_FIELDS
SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
QUALITIES = ("auto", "low", "medium", "high", "standard", "hd")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
MAX_JSON_DEPTH = 32
MAX_SLO_MS = 7 * 24 * 3600 * 1000.0     # a week: beyond it a deadline means nothing to a round scheduler
MAX_EPOCH_MS = 1e14                     # year 5138: keeps deadline_ms arithmetic finite and exact enough


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    n: int
    width: int
    height: int
    response_format: str
    model: str | None
    steps: int | None
    slo_ms: float | None
    deadline_ms: float | None     # absolute, Unix epoch milliseconds
    seed: int | None
    quality: str = "auto"
    output_format: str = "png"
    output_compression: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None


def _int(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise invalid(name, v, "must be an integer")
    if not lo <= v <= hi:
        raise invalid(name, v, f"must be between {lo} and {hi}")
    return v


def _number(body: dict[str, Any], name: str, lo: float, hi: float, positive: bool = True) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise invalid(name, v, "must be a finite number")
    if positive and v <= 0:
        raise invalid(name, v, "must be positive")
    if not lo <= v <= hi:
        raise invalid(name, v, f"must be between {lo:g} and {hi:g}")
    return float(v)


def _str(body: dict[str, Any], name: str, choices: tuple[str, ...] | None = None) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise invalid(name, v, "must be a string" + (f": one of {', '.join(choices)}" if choices else ""))
    if choices is not None and v not in choices:
        raise invalid(name, v, f"must be one of {', '.join(choices)}")
    return v


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DELTA = [0] * 256
for _c in b"[{":
    _DELTA[_c] = 1
for _c in b"]}":
    _DELTA[_c] = -1


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` (brackets inside strings skipped).

    Linear, without recursion, and in C loops (regex, translate, accumulate): a megabyte of
    brackets costs tens of milliseconds, not a RecursionError in json.loads."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    return max(itertools.accumulate(map(_DELTA.__getitem__, brackets)), default=0) > limit


def parse_json_body(raw: bytes, content_type: str | None = None) -> dict[str, Any]:
    """The body as a JSON object: JSON media type, nesting at most MAX_JSON_DEPTH, an object."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, f"Content-Type: must be application/json (got {content_type!r})",
                       param="Content-Type", code="unsupported_media_type")
    if nests_deeper_than(raw, MAX_JSON_DEPTH):
        raise ApiError(400, f"request body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels",
                       code="invalid_json")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object (got {type(body).__name__})", code="invalid_json")
    return body


def parse_generation(body: dict[str, Any], *, max_prompt_chars: int, max_n: int, max_steps: int,
                     default_size: str) -> GenerationRequest:
    for k in body:
        if k not in KNOWN_FIELDS:
            raise ApiError(400, f"{k}: Unrecognized request argument supplied", param=k, code="unknown_parameter")
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(400, "prompt: missing required field", param="prompt", code="missing_required_parameter")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("prompt", prompt, "must be a non-empty string")
    if len(prompt) > max_prompt_chars:
        raise invalid("prompt", f"{len(prompt)} characters", f"longer than the limit of {max_prompt_chars}")
    n = _int(body, "n", 1, max_n) or 1
    size = _str(body, "size") or "auto"
    if size == "auto":
        size = default_size
    m = SIZE_RE.match(size)
    if not m:
        raise invalid("size", body.get("size"), "must be 'WIDTHxHEIGHT' (e.g. '1024x1024') or 'auto'")
    w, h = int(m.group(1)), int(m.group(2))
    if w % 16 or h % 16 or w < 16 or h < 16:
        raise invalid("size", size, "width and height must be positive multiples of 16")
    fmt = _str(body, "response_format", ("b64_json", "url")) or "b64_json"
    if body.get("stream") is not None and body["stream"] is not False:
        raise invalid("stream", body["stream"], "streamed images are not supported; use POST /v1/jobs and "
                                                "GET /v1/jobs/{id}/events for progress", code="unsupported_value")
    _int(body, "partial_images", 0, 0)
    for k in IGNORED_STRINGS:
        _str(body, k)
    out_fmt = _str(body, "output_format", OUTPUT_FORMATS) or "png"
    compression = _int(body, "output_compression", 0, 100)
    if compression is not None and out_fmt == "png":
        raise invalid("output_compression", compression, "applies to output_format 'jpeg' or 'webp' only")
    quality = _str(body, "quality", QUALITIES) or "auto"
    model = _str(body, "model")
    slo = _number(body, "slo_ms", 0, MAX_SLO_MS)
    deadline = _number(body, "deadline_ms", 0, MAX_EPOCH_MS)
    if slo is not None and deadline is not None:
        raise invalid("deadline_ms", deadline, "give either slo_ms (relative) or deadline_ms (absolute), not both")
    steps = _int(body, "steps", 1, max_steps)
    nis = _int(body, "num_inference_steps", 1, max_steps)
    if steps is not None and nis is not None and steps != nis:
        raise invalid("num_inference_steps", nis, f"differs from steps ({steps}); give one of them")
    negative = body.get("negative_prompt")
    if negative is not None and (not isinstance(negative, str) or len(negative) > max_prompt_chars):
        raise invalid("negative_prompt", negative, f"must be a string of at most {max_prompt_chars} characters")
    return GenerationRequest(prompt=prompt, n=n, width=w, height=h, response_format=fmt, model=model,
                             steps=steps if steps is not None else nis, slo_ms=slo, deadline_ms=deadline,
                             seed=_int(body, "seed", 0, 2**63 - 1), quality=quality, output_format=out_fmt,
                             output_compression=compression,
                             guidance_scale=_number(body, "guidance_scale", 0, 100, positive=False),
                             negative_prompt=negative)


def request_schema(max_n: int, max_steps: int) -> dict[str, Any]:
    """The body's JSON schema for the OpenAPI document (parsing stays the hand-written code above)."""
    s = {"type": "string"}
    return {
        "type": "object", "required": ["prompt"], "additionalProperties": False,
        "properties": {
            "prompt": {"type": "string", "minLength": 1}, "n": {"type": "integer", "minimum": 1, "maximum": max_n},
            "size": {"type": "string", "pattern": SIZE_RE.pattern + "|^auto$"},
            "response_format": {"enum": ["b64_json", "url"]}, "model": s,
            "quality": {"enum": list(QUALITIES)}, "output_format": {"enum": list(OUTPUT_FORMATS)},
            "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
            "partial_images": {"type": "integer", "minimum": 0, "maximum": 0}, "stream": {"enum": [False]},
            **{k: s for k in sorted(IGNORED_STRINGS)},
            "steps": {"type": "integer", "minimum": 1, "maximum": max_steps},
            "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": max_steps},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            "guidance_scale": {"type": "number", "minimum": 0, "maximum": 100},
            "negative_prompt": s,
            "slo_ms": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SLO_MS},
            "deadline_ms": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_EPOCH_MS},
        },
    }

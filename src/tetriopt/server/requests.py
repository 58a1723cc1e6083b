"""Parsing an image request: OpenAI Images fields plus tetriopt's deadline and step fields.

Everything is checked by hand so that each refusal names its field and the value it got, in
the OpenAI error shape (FastAPI's own 422s name neither in a form OpenAI clients show).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, invalid

# OpenAI Images fields that are accepted and either used or ignored (no effect on a DiT server)
OPENAI_FIELDS = {"prompt", "n", "size", "response_format", "model", "quality", "style", "user",
                 "background", "moderation", "output_format", "output_compression", "partial_images", "stream"}
TETRIOPT_FIELDS = {"slo_ms", "deadline_ms", "steps", "seed"}
SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


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


def _int(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise invalid(name, v, "must be an integer")
    if not lo <= v <= hi:
        raise invalid(name, v, f"must be between {lo} and {hi}")
    return v


def _number(body: dict[str, Any], name: str, positive: bool = True) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise invalid(name, v, "must be a finite number")
    if positive and v <= 0:
        raise invalid(name, v, "must be positive")
    return float(v)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object (got {type(body).__name__})", code="invalid_json")
    return body


def parse_generation(body: dict[str, Any], *, max_prompt_chars: int, max_n: int, max_steps: int,
                     default_size: str) -> GenerationRequest:
    for k in body:
        if k not in OPENAI_FIELDS and k not in TETRIOPT_FIELDS:
            raise ApiError(400, f"Unrecognized request argument supplied: {k}", param=k, code="unknown_parameter")
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(400, "prompt: missing required field", param="prompt", code="missing_required_parameter")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("prompt", prompt, "must be a non-empty string")
    if len(prompt) > max_prompt_chars:
        raise invalid("prompt", f"{len(prompt)} characters", f"longer than the limit of {max_prompt_chars}")
    n = _int(body, "n", 1, max_n) or 1
    size = body.get("size") or "auto"
    if size == "auto":
        size = default_size
    m = SIZE_RE.match(size) if isinstance(size, str) else None
    if not m:
        raise invalid("size", body.get("size"), "must be 'WIDTHxHEIGHT' (e.g. '1024x1024') or 'auto'")
    w, h = int(m.group(1)), int(m.group(2))
    if w % 16 or h % 16 or w < 16 or h < 16:
        raise invalid("size", size, "width and height must be positive multiples of 16")
    fmt = body.get("response_format") or "b64_json"
    if fmt not in ("b64_json", "url"):
        raise invalid("response_format", fmt, "must be 'b64_json' or 'url'")
    if body.get("stream"):
        raise invalid("stream", body["stream"], "streamed images are not supported; use POST /v1/jobs and "
                                                "GET /v1/jobs/{id}/events for progress", code="unsupported_value")
    of = body.get("output_format")
    if of not in (None, "png"):
        raise invalid("output_format", of, "only 'png' is produced", code="unsupported_value")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("model", model, "must be a string")
    slo = _number(body, "slo_ms")
    deadline = _number(body, "deadline_ms")
    if slo is not None and deadline is not None:
        raise invalid("deadline_ms", deadline, "give either slo_ms (relative) or deadline_ms (absolute), not both")
    seed = _int(body, "seed", 0, 2**63 - 1)
    return GenerationRequest(prompt=prompt, n=n, width=w, height=h, response_format=fmt, model=model,
                             steps=_int(body, "steps", 1, max_steps), slo_ms=slo, deadline_ms=deadline, seed=seed)

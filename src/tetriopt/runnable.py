"""Which SP degrees the runtime can run a request at: the planner's and the server's side of the
runtime's sharding rule, without torch.

Ulysses sequence parallelism splits a request's image tokens evenly over the k ranks of its GPU
set and, inside attention, its heads evenly over the same ranks. A degree that divides neither
cannot run: the runtime refuses such an assignment (failing that request alone). Planning only
with `runnable_degrees` keeps such assignments from being made at all. Padding the sequence to a
multiple of k would change the image (padded tokens take part in attention unless masked), so
sizes are not padded: every size of whole 16 px patches runs at degree 1, and a size whose token
count is odd (e.g. 272x272: 17 x 17 tokens) runs at degree 1 only.
"""

from __future__ import annotations

from typing import Iterable, Optional

PX_PER_TOKEN_SIDE = 16  # 8x VAE downsampling x 2x2 patches (FLUX, SD3)

# Attention heads of the transformer per model family, longest name prefix first. The runtime
# checks the loaded model's own head count again before it runs anything.
MODEL_HEADS: tuple[tuple[str, int], ...] = (
    ("sd3.5-large", 38),
    ("sd3.5-medium", 24),
    ("sd3-medium", 24),
    ("tiny-flux", 4),
    ("tiny-sd3", 4),
    ("flux", 24),
    ("sd3", 24),
)


def heads_of(model: str) -> Optional[int]:
    """Attention heads of a profile's model name (`CostProfile.model`), None when unknown."""
    m = model.lower()
    for prefix, heads in MODEL_HEADS:
        if m.startswith(prefix):
            return heads
    return None


def image_tokens(width: int, height: int) -> int:
    return (width // PX_PER_TOKEN_SIDE) * (height // PX_PER_TOKEN_SIDE)


def split_problem(tokens: int, heads: Optional[int], degree: int) -> Optional[str]:
    """Why `degree` ranks cannot share a request of `tokens` image tokens (None: they can)."""
    if degree < 1:
        return f"degree {degree} is not positive"
    if tokens % degree:
        return f"{tokens} image tokens do not split over {degree} ranks"
    if heads is not None and heads % degree:
        return f"{heads} attention heads do not split over {degree} ranks"
    return None


def size_problem(width: int, height: int) -> Optional[str]:
    """Why the runtime cannot make an image of this size at any degree (None: it can)."""
    if width <= 0 or height <= 0 or width % PX_PER_TOKEN_SIDE or height % PX_PER_TOKEN_SIDE:
        return f"{width}x{height}: width and height must be positive multiples of {PX_PER_TOKEN_SIDE} px"
    return None


def runnable_degrees(model: str, width: int, height: int, degrees: Iterable[int],
                     heads: Optional[int] = None) -> tuple[int, ...]:
    """The degrees among `degrees` at which the runtime can run a (model, width, height) request.

    Empty when the size itself is invalid. `heads`: the loaded transformer's attention heads (an
    executor's `heads`, read from its weights); without it, the count for the profile's model name
    `model` ("flux.1-dev", "sd3-medium", "tiny-flux", ...), and for an unknown name only the token
    rule is applied.
    """
    if size_problem(width, height):
        return ()
    t, h = image_tokens(width, height), heads if heads is not None else heads_of(model)
    return tuple(k for k in degrees if split_problem(t, h, k) is None)

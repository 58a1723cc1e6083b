"""The least GPU-time a request alone still needs to finish u steps by its deadline, for every u,
and the lower convex envelope of that table (the round model's `convex` switch, docs/solver.md 4).

From a round boundary, a started request (its latent on a set: no text encode left) runs in each
round at most one assignment on one GPU set of degree k: n steps with n T_k <= the round, GPU-time
n k T_k; the round it finishes in also holds its VAE decode on that set (k x decode GPU-time) and
ends by its deadline (the rule of `lookahead.steps_within`). Only the finishing round and the one
before it need looking at (a later full round only adds room). Rounds before the finishing one
are all full, so the least GPU-time of n steps over j of them (a min-plus power of one round's
table) depends only on the step latencies, and is memoised across requests and rounds.

Leaving more steps for later raises the degree they need: the table is increasing, and (nearly)
convex where cheap degrees no longer fit the steps into the rounds left; a kept request's
remaining steps valued linearly at one per-step cost miss that.
"""

from __future__ import annotations

from functools import lru_cache

INF = float("inf")


def _round_table(round_us: int, step: tuple[tuple[int, int], ...], room_us: int, extra_gpu_us: int, top: int,
                 first: int = 0) -> list[float]:
    """n = 0..top -> least GPU-time of n steps in one assignment within room_us, plus
    extra_gpu_us per GPU of the set (its decode) when n >= 1; inf where none fits; n < first: inf."""
    out = [0.0] + [INF] * top
    for k, t in step:
        if t <= 0:
            continue
        most = min(top, room_us // t)
        for n in range(max(1, first), most + 1):
            g = n * k * t + k * extra_gpu_us
            if g < out[n]:
                out[n] = g
    if first:
        out[0] = INF
    return out


def _min_plus(a: list[float], b: list[float]) -> list[float]:
    """c[u] = min over n of a[u - n] + b[n], for u < len(a)."""
    out = [INF] * len(a)
    for n, bn in enumerate(b):
        if bn == INF:
            continue
        for u in range(n, len(a)):
            v = a[u - n] + bn
            if v < out[u]:
                out[u] = v
    return out


@lru_cache(maxsize=4096)
def _full_rounds(round_us: int, step: tuple[tuple[int, int], ...], j: int, top: int) -> tuple[float, ...]:
    """u = 0..top -> least GPU-time of u steps over j full rounds."""
    if j <= 0:
        return (0.0,) + (INF,) * top
    one = _round_table(round_us, step, round_us, 0, top)
    return tuple(_min_plus(list(_full_rounds(round_us, step, j - 1, top)), one))


@lru_cache(maxsize=65536)
def least_cost_table(round_us: int, step: tuple[tuple[int, int], ...], span_us: int, decode_us: int,
                     top: int) -> tuple[float, ...]:
    """u = 0..top -> the least GPU-time (us) of a started request alone to run u more steps and its
    decode within span_us from a round boundary (inf where it cannot). `step`: (degree, step
    latency) of its useful degrees."""
    out = [0.0] + [INF] * top
    if span_us <= 0 or top <= 0:
        return tuple(out)
    last = span_us // round_us
    for j in (last, last - 1):
        if j < 0:
            continue
        room = min(round_us, span_us - j * round_us) - decode_us
        if room <= 0:
            continue
        fin = _round_table(round_us, step, room, decode_us, top, first=1)  # (room: the decode after them)
        best = _min_plus(list(_full_rounds(round_us, step, j, top)), fin)
        out = [min(x, y) for x, y in zip(out, best)]
    out[0] = 0.0
    return tuple(out)


def lower_envelope(table: list[float] | tuple[float, ...]) -> list[tuple[int, int]]:
    """The vertices (u, C) of the lower convex envelope of the finite points (u, table[u]),
    from u = 0; integer C (the table's values, which the caller rounds)."""
    pts = [(u, c) for u, c in enumerate(table) if c != INF]
    hull: list[tuple[int, int]] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point unless it lies strictly below the chord from hull[-2] to p
            if (y2 - y1) * (p[0] - x1) >= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def segments(hull: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Rows (du, dc, b) of the envelope: du c >= dc u + b for every segment, b = du C1 - dc u1 (the
    segment's line at u = 0, times du: <= 0 when the envelope starts at (0, 0))."""
    return [(u2 - u1, c2 - c1, (u2 - u1) * c1 - (c2 - c1) * u1) for (u1, c1), (u2, c2) in zip(hull, hull[1:])]


def envelope_values(hull: list[tuple[int, int]], top: int) -> list[int]:
    """envelope_at(segments(hull), u) for u = 0..top, walking the hull once: on a convex envelope
    the largest row at u is the segment's that holds u (the last one's beyond the hull)."""
    rows = segments(hull)
    out, j, last = [], 0, len(rows) - 1
    for u in range(top + 1):
        while j < last and u > hull[j + 1][0]:
            j += 1
        du, dc, b = rows[j]
        out.append(max(0, -(-(dc * u + b) // du)))
    return out


def envelope_at(rows: list[tuple[int, int, int]], u: int, keep: int = 1) -> int:
    """The least integer c >= 0 satisfying every row at u (and keep)."""
    return max([0] + [-(-(dc * u + b * keep) // du) for du, dc, b in rows])

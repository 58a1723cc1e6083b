"""TetriServe's round policy (arXiv 2510.01565), re-implemented from the paper as a baseline.

Per round (sec. 4.2): (1) deadline-aware minimal allocation: every request's options are "run
at degree k for a whole round" (steps = min(remaining, floor(tau / T(k)))) for the degrees at
least as costly as the cheapest one at which it would still meet its deadline, or "wait"; (2) the
survival test: an option survives if next_round_start + steps_left * T_min <= deadline, looked
at per request; (3) a group-knapsack DP over GPU counts (Algorithm 1) picks one option per
request maximising survivors; (4) requests certain to be late get at most one GPU, best effort;
(5) placement preservation keeps a request on its GPUs; (6) work-conserving elastic scale-up
gives idle GPUs to the requests that gain most steps from a larger degree.

Where the paper is silent we guessed, and say so:
- DP ties between equal survivor counts go to running more requests (a request whose "wait"
  option also survives still gets its minimal allocation when GPUs allow: waiting only wastes
  slack), then to the least GPU-time (the "minimal" allocation).
- The survival test adds the VAE decode to the finish time (the deadline covers the image).
- A GPU runs at most one request per round (their rounds bind a request to its GPUs); a request
  finishing early leaves its GPUs idle until the round ends.
- Elastic scale-up doubles a request's set into its aligned buddy when the buddy is idle, and
  also starts waiting requests (deadline order) on idle GPUs; gain = extra steps this round,
  ties to the earlier deadline.
- Late requests get one GPU each (or the fewest on which a step fits in the round), oldest
  first, only from GPUs left after survivors are placed.
- Degrees whose single step exceeds the round are not options.
Variants for the paper's ablation: "schedule" (1-4 only, first-fit placement), "placement"
(+5), "full" (+5 and 6).

Selective batching (sec. 4.2, option `batching`; the paper gives the rule in one sentence, the
rest is guessed): only identical small-resolution requests (at most 512 x 512 px) batch, and only
when no SLO suffers: after placement, in deadline order, a placed request or one still waiting
joins another placed request's batch of the same size and degree when every member still passes
the survival test with the batch's slower step and the steps it fits in the round; a joiner's own
GPUs are freed for late requests and scale-up. Batches are not scaled up.
"""

from __future__ import annotations

import time

from ..lookahead import outlook
from ..plan import PlanStatus, RoundPlan, make_plan
from ..state import RequestState, RoundState


def smallest_fit(state: RoundState, r: RequestState) -> int:
    """The fewest GPUs on which one step of r fits in a round (one GPU where it can)."""
    return min(k for k in state.degrees if state.sets[k] and state.step_us(r, k) <= state.round_us)


class TetriServe:
    SMALL_PIXELS = 512 * 512  # selective batching: "small resolution" (guess)

    def __init__(self, variant: str = "full", batching: bool = False):
        assert variant in ("schedule", "placement", "full")
        self.variant = variant
        self.batching = batching
        self.name = "tetriserve" if variant == "full" else f"tetriserve-{variant}"

    def _options(self, state: RoundState, r: RequestState) -> tuple[list[tuple[int, int, bool]], bool]:
        steps = {k: state.step_us(r, k) for k in state.degrees if state.step_us(r, k) <= state.round_us
                 and state.sets[k]}
        tmin = min(steps.values())
        due = r.deadline_us - state.decode_us(r)

        def survives(n: int, k: int | None) -> bool:
            left = r.remaining_steps - n
            if left == 0:
                return state.now_us + n * steps[k] <= due
            return state.end_us + left * tmin <= due

        # minimal deadline-meeting allocation: degrees at which the request, run from now on,
        # still finishes in time; the cheapest of them is what the DP picks unless GPUs are short
        o = outlook(state, r)
        k_min = o.cheapest_degree if o.alive else None
        opts = [(0, 0, survives(0, None))]
        for k, t in sorted(steps.items()):
            if k_min is not None and k * t < k_min * steps[k_min]:
                continue  # cheaper but too slow to meet the deadline: not an allocation option
            n = min(r.remaining_steps, state.round_us // t)
            opts.append((k, n, survives(n, k)))
        late = not any(s for _, _, s in opts)
        return opts, late

    def plan(self, state: RoundState) -> RoundPlan:
        t0 = time.perf_counter()
        reqs = sorted(state.requests, key=lambda r: (r.deadline_us, r.arrival_us, r.id))
        N = state.cluster.gpus
        options, late = {}, set()
        for r in reqs:
            options[r.id], is_late = self._options(state, r)
            if is_late:
                late.add(r.id)
        # group knapsack: dp[c] = (survivors, requests run, -gpu_time) using exactly c GPUs
        NEG = (-1, 0, 0)
        dp = [(0, 0, 0)] + [NEG] * N
        choice: list[list[int]] = []
        for r in reqs:
            opts = options[r.id] if r.id not in late else options[r.id][:1]
            new = [NEG] * (N + 1)
            pick = [0] * (N + 1)
            for c in range(N + 1):
                for j, (k, n, surv) in enumerate(opts):
                    if k > c or dp[c - k] == NEG:
                        continue
                    cost = k * n * (state.step_us(r, k) if k else 0)
                    val = (dp[c - k][0] + int(surv), dp[c - k][1] + int(k > 0), dp[c - k][2] - cost)
                    if val > new[c]:
                        new[c], pick[c] = val, j
            dp = new
            choice.append(pick)
        c = max(range(N + 1), key=lambda c: (dp[c], -c))
        chosen: dict[str, tuple[int, int]] = {}
        for i in range(len(reqs) - 1, -1, -1):
            r = reqs[i]
            opts = options[r.id] if r.id not in late else options[r.id][:1]
            k, n, _ = opts[choice[i][c]]
            if k:
                chosen[r.id] = (k, n)
            c -= k
        by_id = {r.id: r for r in reqs}
        free = set(range(N))
        placed: dict[str, tuple[tuple[int, ...], int]] = {}

        def take(rid: str, k: int, n: int) -> bool:
            r = by_id[rid]
            cands = [g for g in state.sets[k] if free.issuperset(g)]
            if not cands:
                return False
            if self.variant != "schedule":
                cands.sort(key=lambda g: (g != r.location, -len(set(g) & set(r.location))))
            g = cands[0]
            free.difference_update(g)
            placed[rid] = (g, n)
            return True

        for rid, (k, n) in sorted(chosen.items(), key=lambda x: (-x[1][0], by_id[x[0]].deadline_us, x[0])):
            take(rid, k, n)
        batches = self._batch(state, reqs, placed, free) if self.batching else {}
        batched = {i for ids, _, _ in batches.values() for i in ids}
        for r in sorted((by_id[i] for i in late if i not in batched), key=lambda r: (r.arrival_us, r.id)):
            k = smallest_fit(state, r)
            take(r.id, k, min(r.remaining_steps, state.round_us // state.step_us(r, k)))
        if self.variant == "full":
            self._scale_up(state, {i: r for i, r in by_id.items() if i not in batched}, placed, free, late)
        decisions = [(rid, g, n) for rid, (g, n) in placed.items()] + list(batches.values())
        return make_plan(state, decisions, backend=self.name, status=PlanStatus.HEURISTIC,
                         kept=tuple(r.id for r in reqs if r.id not in late),
                         solve_ms=(time.perf_counter() - t0) * 1e3)

    def _batch(self, state: RoundState, reqs, placed, free) -> dict:
        """Selective batching (module docstring): leader -> (member ids, GPUs, steps); members
        leave `placed`, and joiners' own GPUs go back to `free`."""
        def survives(r: RequestState, n: int, t: int) -> bool:
            left = r.remaining_steps - n
            due = r.deadline_us - state.decode_us(r)
            if left == 0:
                return state.now_us + n * t <= due
            tmin = min(state.step_us(r, k) for k in state.degrees if state.sets[k])
            return state.end_us + left * tmin <= due

        by_id = {q.id: q for q in reqs}
        batches: dict[str, tuple[tuple[str, ...], tuple[int, ...], int]] = {}  # leader -> batch
        for r in reqs:  # deadline order
            if r.width * r.height > self.SMALL_PIXELS:
                continue
            for lead, (ids, g, n) in list(batches.items()):
                first = by_id[ids[0]]
                if (first.width, first.height) != (r.width, r.height) or len(ids) + 1 not in state.profile.batch_sizes:
                    continue
                t = state.step_us(r, len(g), len(ids) + 1)
                group = [by_id[i] for i in ids] + [r]
                n2 = min(min(q.remaining_steps for q in group), state.round_us // t)
                if n2 <= 0 or not all(survives(q, n2, t) for q in group):
                    continue
                if r.id in placed:
                    free.update(placed.pop(r.id)[0])
                batches[lead] = ((*ids, r.id), g, n2)
                break
            else:
                if r.id in placed:  # a placed request may lead a batch others join
                    g, n = placed.pop(r.id)
                    batches[r.id] = ((r.id,), g, n)
        for lead, (ids, g, n) in list(batches.items()):  # a "batch" of one is the request alone
            if len(ids) == 1:
                placed[lead] = (g, n)
                del batches[lead]
        return batches

    def _scale_up(self, state, by_id, placed, free, late) -> None:
        """Give idle GPUs to whoever gains most steps this round, until none gains."""
        while free:
            best = None
            for rid, r in by_id.items():
                cur = placed.get(rid)
                if cur is None:
                    moves = [g for g in state.sets[smallest_fit(state, r)] if free.issuperset(g)][:1]
                    base = 0
                else:
                    g0, base = cur
                    k2 = 2 * len(g0)
                    moves = [g for g in state.sets.get(k2, ()) if set(g0) < set(g) and free.issuperset(set(g) - set(g0))]
                for g in moves:
                    t = state.step_us(r, len(g))
                    if t > state.round_us:
                        continue
                    n = min(r.remaining_steps, state.round_us // t)
                    gain = n - base
                    if gain <= 0:
                        continue
                    key = (gain, rid not in late, -r.deadline_us, rid)
                    if best is None or key > best[0]:
                        best = (key, rid, g, n)
            if best is None:
                return
            _, rid, g, n = best
            if rid in placed:
                free.difference_update(set(g) - set(placed[rid][0]))
            else:
                free.difference_update(g)
            placed[rid] = (tuple(g), n)

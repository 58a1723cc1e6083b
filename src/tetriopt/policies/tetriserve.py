"""TetriServe's round policy (arXiv 2510.01565), re-implemented from the paper as a baseline.

Per round (sec. 4.2): (1) deadline-aware minimal allocation: every request's options are "run
at degree k for a whole round" (steps = min(remaining, floor(tau / T(k)))) for the degrees at
least as costly as the cheapest one at which it would still meet its deadline, or "wait"; (2) the
survival test: an option survives if next_round_start + steps_left * T_min <= deadline, looked
at per request; (3) a group-knapsack DP over GPU counts (Algorithm 1) picks one option per
request maximising survivors; (4) requests certain to be late get at most one GPU, best effort;
(5) placement preservation keeps a request on its GPUs; (6) work-conserving elastic scale-up
gives idle GPUs to the requests whose steps get fastest at a larger degree.

Where the paper is silent we guessed, and say so:
- DP ties between equal survivor counts go to running more requests (a request whose "wait"
  option also survives still gets its minimal allocation when GPUs allow: waiting only wastes
  slack), then to the least GPU-time (the "minimal" allocation).
- The survival test adds the VAE decode to the finish time (the deadline covers the image).
- A GPU runs at most one request per round (their rounds bind a request to its GPUs); a request
  finishing early leaves its GPUs idle until the round ends.
- Options are the useful degrees (a step fits in a round and is faster than at every smaller
  degree) at least as costly per step as the cheapest degree that still meets the deadline.
- Placement: the DP counts GPUs, not aligned sets, so a chosen request may find no free aligned
  set of its degree; it is then seated at the next smaller option that fits (the DP's choice
  stands otherwise). Requests the DP left waiting that still survive are seated on idle GPUs,
  earliest deadline first, at their narrowest option, before any scale-up ("no GPU remains
  unused" comes after every request that could still make it has a seat).
- Late requests get one GPU each (or the fewest on which a step fits in the round), oldest
  first, only from GPUs left after survivors are seated. Whatever is still unseated then
  (survivors first, by deadline; then late ones) takes the smallest useful degree that finds
  idle GPUs: measured on the shipped workloads this last pass alone is worth +10 to +15
  deadlines of 300, because "no GPU remains unused" has to cover requests, not only degrees.
- Elastic scale-up (sec. 4.2, "if T(k') < T(k), prioritizing those that benefit most"): gain is
  the per-step time saved, T(k) - T(k'), for a move from the current set to any larger useful
  aligned set made of the request's own GPUs and idle ones (so it may be re-placed onto another
  block when its own has no idle buddy); among equal gains, survivors before late requests, then
  a set that keeps the latent's GPUs, then the earlier deadline. Moves repeat until no idle GPU
  can make any request faster, so no GPU idles while a request could use it. Steps are
  recomputed at the new degree (min(remaining, floor(tau / T(k')))).
- Degrees whose single step exceeds the round are not options.
Variants: "schedule" (1-4 only, first-fit placement), "placement" (+5), "full" (+5 and 6, the
default `tetriserve`), and "stepgain": the earlier guess at 6 kept as an ablation, where gain is
the extra whole steps this round and a request only doubles into its idle aligned buddy (a 2048 px
request whose step fits once per round at degree 1 and at 2 then never scales up).

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
from .formulation import OutOfTime, past
from .greedy import CHECK_EVERY


def smallest_fit(state: RoundState, r: RequestState) -> int:
    """The fewest GPUs on which a step of r (with its encode / decode) fits in a round (one GPU where
    it can)."""
    ks = outlook(state, r).degrees
    return min((k for k in ks if state.max_steps(r, k) > 0), default=min(ks))


Option = tuple[int, int, bool]  # (degree, steps, survives); degree 0 = wait


class TetriServe:
    VARIANTS = ("schedule", "placement", "full", "stepgain")
    SMALL_PIXELS = 512 * 512  # selective batching: "small resolution" (guess)

    def __init__(self, variant: str = "full", batching: bool = False):
        assert variant in self.VARIANTS
        self.variant = variant
        self.batching = batching
        self.name = "tetriserve" if variant == "full" else f"tetriserve-{variant}"

    def _options(self, state: RoundState, r: RequestState) -> tuple[list[Option], bool]:
        o = outlook(state, r)
        steps = o.step
        tmin = steps[o.fastest]
        due = state.due_us(r)

        def survives(n: int, k: int | None) -> bool:
            left = r.remaining_steps - n
            if left == 0:
                return state.now_us + n * steps[k] + state.aux_us(r, n) <= r.deadline_us
            return state.end_us + left * tmin <= due

        # minimal deadline-meeting allocation: degrees at which the request, run from now on,
        # still finishes in time; the cheapest of them is what the DP picks unless GPUs are short
        k_min = o.cheapest_degree if o.alive else None
        opts = [(0, 0, survives(0, None))]
        for k, t in sorted(steps.items()):
            if k_min is not None and k * t < k_min * steps[k_min]:
                continue  # cheaper but too slow to meet the deadline: not an allocation option
            n = state.max_steps(r, k)
            if n > 0:
                opts.append((k, n, survives(n, k)))
        late = not any(s for _, _, s in opts)
        return opts, late

    def _knapsack(self, state: RoundState, reqs: list[RequestState],
                  options: dict[str, list[Option]], stop: float | None = None) -> dict[str, tuple[int, int]]:
        """Algorithm 1: one option per request, most survivors, then most requests run, then the
        least GPU-time; returns id -> (degree, steps) for those that run."""
        N = state.cluster.gpus
        NEG = (-1, 0, 0)
        dp = [(0, 0, 0)] + [NEG] * N
        choice: list[list[int]] = []
        for i, r in enumerate(reqs):
            if i % CHECK_EVERY == CHECK_EVERY - 1 and past(stop):
                raise OutOfTime
            opts = options[r.id]
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
            k, n, _ = options[reqs[i].id][choice[i][c]]
            if k:
                chosen[reqs[i].id] = (k, n)
            c -= k
        return chosen

    def plan(self, state: RoundState, stop: float | None = None) -> RoundPlan:
        """The round's plan; with `stop` (perf_counter seconds), OutOfTime once it passes (the
        caller's decision budget: the plan is all or nothing; checked every CHECK_EVERY requests)."""
        t0 = time.perf_counter()
        reqs = sorted(state.requests, key=lambda r: (r.deadline_us, r.arrival_us, r.id))
        options: dict[str, list[Option]] = {}
        late: set[str] = set()
        for i, r in enumerate(reqs):
            if i % CHECK_EVERY == CHECK_EVERY - 1 and past(stop):
                raise OutOfTime
            options[r.id], is_late = self._options(state, r)
            if is_late:
                late.add(r.id)
                options[r.id] = options[r.id][:1]  # the DP only decides survivors
        chosen = self._knapsack(state, reqs, options, stop)
        by_id = {r.id: r for r in reqs}
        free = set(range(state.cluster.gpus))
        placed: dict[str, tuple[tuple[int, ...], int]] = {}

        def take(rid: str, k: int, n: int) -> bool:
            if len(free) < k or n <= 0:  # (the scan below would find nothing)
                return False
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

        def seat(rid: str, k_max: int) -> None:
            """The widest option up to k_max that finds a free aligned set (survivors)."""
            for k, n, _ in sorted(options[rid][1:], reverse=True):
                if k <= k_max and take(rid, k, n):
                    return

        fair = self.variant == "full"
        for rid, (k, n) in sorted(chosen.items(), key=lambda x: (-x[1][0], by_id[x[0]].deadline_us, x[0])):
            if not take(rid, k, n) and fair:
                seat(rid, k)
        if fair:  # survivors the DP left waiting get idle GPUs before any late request or scale-up
            for r in reqs:
                if r.id not in placed and r.id not in late and len(options[r.id]) > 1:
                    k, n, _ = options[r.id][1]  # its narrowest option (the minimal allocation)
                    take(r.id, k, n)
        batches = self._batch(state, reqs, placed, free) if self.batching else {}
        batched = {i for ids, _, _ in batches.values() for i in ids}
        for r in sorted((by_id[i] for i in late if i not in batched), key=lambda r: (r.arrival_us, r.id)):
            if not free:
                break  # (nothing more can be taken: at a backlog most requests are late)
            k = smallest_fit(state, r)
            take(r.id, k, state.max_steps(r, k))
        if fair:  # anything still unseated that fits on idle GPUs
            for r in sorted(reqs, key=lambda r: (r.id in late, r.deadline_us, r.id)):
                if not free:
                    break
                if r.id not in placed and r.id not in batched:
                    for k in outlook(state, r).degrees:
                        if take(r.id, k, state.max_steps(r, k)):
                            break
        if self.variant == "full":
            self._scale_up(state, {i: r for i, r in by_id.items() if i not in batched}, placed, free, late)
        elif self.variant == "stepgain":
            self._scale_up_steps(state, {i: r for i, r in by_id.items() if i not in batched}, placed, free, late)
        decisions = [(rid, g, n) for rid, (g, n) in placed.items()] + list(batches.values())
        return make_plan(state, decisions, backend=self.name, status=PlanStatus.HEURISTIC,
                         kept=tuple(r.id for r in reqs if r.id not in late),
                         solve_ms=(time.perf_counter() - t0) * 1e3)

    def _batch(self, state: RoundState, reqs, placed, free) -> dict:
        """Selective batching (module docstring): leader -> (member ids, GPUs, steps); members
        leave `placed`, and joiners' own GPUs go back to `free`."""
        def survives(r: RequestState, n: int, t: int, aux: int) -> bool:
            left = r.remaining_steps - n
            due = r.deadline_us - state.decode_us(r)
            if left == 0:
                return state.now_us + n * t + aux <= r.deadline_us
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
                n2 = state.fit_steps(tuple(group), len(g), state.round_us)
                aux = sum(state.aux_us(q, n2) for q in group)
                if n2 <= 0 or not all(survives(q, n2, t, aux) for q in group):
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
        """Work-conserving elastic scale-up: while an idle GPU can make a running request's step
        faster, move the request with the largest per-step saving T(k) - T(k') to a larger
        aligned set made of its own GPUs and idle ones (survivors before late requests)."""
        while free:
            best = None
            for rid, (g0, _) in placed.items():
                r = by_id[rid]
                o = outlook(state, r)
                k0 = len(g0)
                t0 = state.step_us(r, k0)
                own = set(g0)
                for k in o.degrees:
                    if k <= k0 or o.step[k] >= t0:
                        continue
                    for g in state.sets[k]:
                        if not free.issuperset(set(g) - own):
                            continue
                        keeps = len(own & set(g))
                        key = (rid not in late, t0 - o.step[k], keeps == k0,
                               len(set(r.location) & set(g)), -r.deadline_us, -k)
                        if best is None or key > best[0]:
                            best = (key, rid, g)
            if best is None:
                return
            _, rid, g = best
            r = by_id[rid]
            free.update(placed[rid][0])
            free.difference_update(g)
            placed[rid] = (tuple(g), state.max_steps(r, len(g)))

    def _scale_up_steps(self, state, by_id, placed, free, late) -> None:
        """The ablation: give idle GPUs to whoever gains most whole steps this round, doubling
        into the idle aligned buddy or starting a waiting request, until none gains."""
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
                    n = state.max_steps(r, len(g))
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

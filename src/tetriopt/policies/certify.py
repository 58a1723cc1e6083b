"""A cheap upper bound on the round model's objective, to skip the search when a warm start
already reaches it.

Most rounds of a lightly loaded cluster hold a few requests that do not compete: each can take
its best degree, steps and keep decision at once. The round model's optimum is then the sum of
what each request could get alone, and the TetriServe or greedy plan usually reaches it; CP-SAT
would spend a few ms finding and proving the same plan (most of the policy's CPU on such
workloads). The bound drops every constraint that couples requests (GPU busy time, the joint
test, the order of urgent requests on shared GPUs) and keeps each request's own ones, so it is a
valid upper bound; where a warm start's value equals it, that plan is optimal.
"""

from __future__ import annotations

from .formulation import RoundModel, keepable


def separable_bound(rm: RoundModel) -> int:
    """Sum over modelled requests of the best objective each could reach alone this round."""
    m, st = rm.model, rm.state
    obj = m.objective
    total = 0
    for r in st.requests:
        if r.id not in rm.keep:
            continue
        kp, dn, u = rm.keep[r.id], rm.done[r.id], rm.left[r.id]
        rem = r.remaining_steps
        can, slack = keepable(st, r, rm.looks[r.id])
        can = can and m.ub[kp] > 0
        budget = st.due_us(r) - st.now_us
        w_kp, w_u, w_dn = obj.get(kp, 0), obj.get(u, 0), obj.get(dn, 0)

        def value(n: int, t: int, bonus: int, w_s: int) -> int:
            """Best of keep / give up with n steps this round (n * t us)."""
            best = w_s * n + bonus + (w_dn if n == rem else 0)  # given up: u = 0
            if can and (n == rem and n * t <= budget if slack is None else rem - n <= slack):
                best = max(best, best + w_kp + w_u * (rem - n))
            return best

        best = value(0, 0, 0, 0)
        for _, t, x, s in rm.cand[r.id]:
            hi = m.ub[s]
            w_s, bonus = obj.get(s, 0), obj.get(x, 0)
            # the value is linear in n between the points where keep or done change
            points = {1, hi, rem, rem - 1} | ({rem - slack, rem - slack - 1} if slack is not None else set())
            for n in points:
                if 1 <= n <= hi:
                    best = max(best, value(n, t, bonus, w_s))
        total += best
    return total

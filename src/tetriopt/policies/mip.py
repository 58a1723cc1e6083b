"""The round MIP as a policy: build the shared model, warm-start it from the fast heuristics,
solve on CP-SAT or PuLP within the time limit, and fall back to the best heuristic plan."""

from __future__ import annotations

import itertools
import time
from typing import Iterator

from ..immediate import pack_idle, reserve_idle
from ..lookahead import outlook
from ..plan import ROLLOUT_CHOICE, PlanStatus, RoundPlan, decisions_of, make_plan, members
from ..state import RoundState
from ..units import ms_to_s
from .backends import BACKENDS
from .certify import request_options, best_alone, beyond, proved, separable, split_objective
from .formulation import OutOfTime, RoundModel, build, complete, past
from .greedy import fill_leftover, fitting, greedy_decisions
from .horizon import Forecast, add_forecast
from .rollout import Forward, without
from .symmetry import add_symmetry_rows, canonical, swaps
from .tetriserve import TetriServe


MAX_PAIRS = 1200  # (request, set) pairs above which build caps each request's candidate sets
LARGE_MODEL = 500  # variables: above this CP-SAT runs without presolve (see docs/solver.md)
SHORT_S = 0.1  # seconds of search left: below this too
MIN_SEARCH_S = 0.002  # less than this left for the search: answer from the warm starts
TETRISERVE_SHARE = 0.25  # its warm start runs when its predicted cost fits in this share of what is left
BUILD_SHARE = 0.65  # the model is built when its predicted cost fits in this share of what is left
SEARCH_SHARE = 0.92  # of what is left after the model goes to the search (CP-SAT overshoots a little)
QUICK_S = 0.05  # deterministic seconds of CP-SAT's first slice without presolve on small models,
QUICK_SHARE = 0.05  # at most this share of the limit
FUTURES = 4  # sampled futures that break a tie between this round's plan and a give-up candidate
FUTURE_MARGIN = 1  # met over all of them the candidate must gain
LATE_SHARE = 0.05  # the most of the limit kept back for lateness (CP-SAT's own overrun is learnt apart)
LOAD_PRIOR = 1.5e-5  # a CP-SAT slice's model load before any is measured: seconds per variable
ROLLOUT_SHARE = 0.25  # the rollout runs when its predicted cost fits in this share of what is left
STALL_SHARE = 0.1  # CP-SAT's first improvement slice (deterministic seconds, as a share of the limit);
                   # it goes on (slices doubling) only while a slice gains half a keep weight


def _resolved(items: list) -> Iterator:
    """The warm starts in order, computing (in place) those left to compute; skipped ones dropped."""
    i = 0
    while i < len(items):
        if callable(items[i]):
            got = items[i]()
            if got is None:
                del items[i]
                continue
            items[i] = got
        yield items[i]
        i += 1


class Rate:
    """Seconds per unit of work of one stage, learnt from the rounds seen (an exponential average,
    starting pessimistic), so that a stage is skipped before it would run past the limit."""

    def __init__(self, initial: float):
        self.value = initial
        self.floor = initial  # the cheapest per-unit cost measured (the initial guess until then)
        self.measured = False

    def predict(self, units: float) -> float:
        return self.value * units

    def observe(self, seconds: float, units: float) -> None:
        if units > 0:
            self.value = 0.7 * self.value + 0.3 * seconds / units
            # a guess below every measurement must not be the floor (TetriServe's 2e-6 s a cell,
            # measured 4e-6 at 1,000 pending, was retried every few rounds and ran past the limit)
            self.floor = seconds / units if not self.measured else min(self.floor, seconds / units)
            self.measured = True

    def aborted(self, seconds: float, units: float) -> None:
        """The stage was stopped at the limit after `seconds`: it costs more than that."""
        if units > 0:
            self.value = max(self.value, 1.5 * seconds / units)

    def skipped(self) -> None:
        """The stage was skipped on this estimate: relax it towards the cheapest cost seen, so
        that one slow round (a busy machine) does not keep the stage off for good, while a stage
        that never fits is not retried on a guess below anything measured."""
        self.value = max(self.floor, 0.8 * self.value)


class _Budgeted:
    """TetriServe as the rollout's base policy, stopped at the round's stop time (OutOfTime): a
    stop only aborts a plan, which Forward then does not memoise, so it stays stateless."""

    def __init__(self, base: TetriServe):
        self.base = base
        self.stop: float | None = None

    def plan(self, state: RoundState) -> RoundPlan:
        return self.base.plan(state, self.stop)


class MipPolicy:
    """The decision of one round within a hard wall-clock limit measured from the call (the
    round's snapshot). Every stage stops at the round's stop time (the limit less a reserve for
    laying the plan out): greedy runs first on large rounds and is anytime (EDF order, so a
    stopped scan leaves a valid plan of the most urgent requests); the TetriServe warm start,
    the model and the search each run only when their predicted cost fits in what is left, and
    are abandoned at the stop time (the model's build, TetriServe's plan, the leftover fill and
    the rollout check the clock as they go); the search gets the rest and stops early once its
    incumbent stalls. In deterministic mode no stage looks at the clock."""

    def __init__(self, backend: str = "cpsat", time_limit_ms: float = 500.0, seed: int = 0,
                 workers: int = 1, hints: bool = True, core_per_gpu: int = 4, min_core: int = 32,
                 joint_capacity: float = 1.0, deterministic: bool = False, batching: bool = False,
                 immediate_start: bool = False, certify: bool = True, forecast: bool = True, symmetry: bool = True,
                 split: bool = True, pack: bool = True, rollout: bool = True, giveup: bool = False,
                 futures: bool = False, joint_proof: bool = True, convex: bool = True):
        self.backend = backend
        self.name = backend
        self.limit_s = ms_to_s(time_limit_ms)  # the time limit, kept once, in seconds (what solvers take)
        self.seed = seed
        self.workers = workers
        self.hints = hints
        self.core_per_gpu = core_per_gpu
        self.min_core = min_core
        self.joint_capacity = joint_capacity
        self.batching = batching  # batch options in the model, and the batching greedy as a warm start
        # the executor starts arrivals at once on idle GPUs: leave them idle rather than fill them with
        # work already given up (immediate.reserve_idle)
        self.immediate_start = immediate_start
        # deterministic: CP-SAT stops on its deterministic clock and no decision looks at the wall
        # clock, so reruns give the same plans even when the limit binds (wall time may overrun)
        self.deterministic = deterministic
        # certify: skip the search when a warm start reaches certify.separable_bound (then it is optimal)
        self.certify = certify
        # symmetry: rows that order interchangeable GPU blocks before the search (symmetry.py)
        self.symmetry = symmetry
        self.split = split
        self.pack = pack  # immediate starts: tie-break toward whole idle blocks (immediate.pack_idle)
        self._tetriserve = TetriServe(batching=batching)  # a warm start (and fallback) that batches too
        self._last: dict[str, tuple[int, ...]] = {}  # request -> GPUs in the previous round's plan
        self._last_kept: tuple[str, ...] = ()
        self.forecast = forecast
        # rollout: play this round's plan and TetriServe's forward on the known requests, and run
        # TetriServe's where it meets more (rollout.py)
        self.rollout = rollout
        # joint_proof: before CP-SAT, rounds of 2-5 requests that the joint test cannot keep together
        # try to prove the best warm start optimal (certify.proved)
        self.joint_proof = joint_proof
        # giveup (off: measured no better, and -1 on one shipped instance, docs/solver.md 4): the rollout
        # also plays this round's plan without the kept requests its own forward play does not meet
        # (given up for good, their GPUs to the rest), and runs that where it meets more
        self.giveup = giveup
        # futures (off: measured worse, docs/solver.md 4): where a give-up candidate meets as many known
        # requests, sampled arrivals decide
        self.futures = futures
        self._given_up: set[str] = set()  # requests a give-up candidate dropped: never kept again
        # convex: a kept request's remaining steps cost, in the objective, the least GPU-time it alone
        # needs to finish them by its deadline (convex in the steps left), not a fixed cost per step
        # (formulation.least_future; on by default: +14 over the 500 ms grid, docs/solver.md 3-4;
        # convex=0 is the model before)
        self.convex = convex
        self._ts = _Budgeted(self._tetriserve)
        # TetriServe's plans (the warm start's and the rollout's) and plays, memoised by state
        self._forward = Forward(self._ts)
        self._forecast = Forecast()  # recent arrivals, replayed as the forecast of the next rounds
        self._ts_rate = Rate(2e-6)      # TetriServe: seconds per DP cell (request x GPU count)
        self._build_rate = Rate(1.5e-5)   # model build, warm-start completion, translation: s per predicted variable
        self._finish_rate = Rate(2e-5)  # the leftover fill (the layout has its own rate): seconds per pending request
        self._layout_rate = Rate(5e-5)  # laying the plan out (make_plan): seconds per decision
        # how late past the limit the last decisions ended (a descheduled process, a garbage
        # collection: at a load average of 3 on 2 cores one round of 10 ended 1-6 ms past it),
        # kept back from the stop time; at most LATE_SHARE of the limit
        self._late = 0.002
        self._decisions = 0  # the most decisions a plan of this policy has held (the layout reserve's size)
        self._units: tuple[RoundState | None, int] = (None, 0)  # _rollout_units of the last state asked
        self._roll_rate = Rate(2e-6)  # rollout: seconds per TetriServe DP cell played (_rollout_units)
        self._overrun_rate = 1e-5  # CP-SAT past its limit when it binds (model load): seconds per variable
        # what a CP-SAT slice costs before it first looks at its clock (loading the model into its
        # worker), seconds per variable, and the least measured (None: nothing measured yet, the prior
        # is the floor): no slice starts without that left
        self._load_rate, self._load_floor = LOAD_PRIOR, None
        if backend == "cpsat":  # pay the solver's import now, not inside the first round's limit
            from ortools.sat.python import cp_model  # noqa: F401

    def _cap(self, state: RoundState) -> int:
        return max(self.min_core, self.core_per_gpu * state.cluster.gpus)

    def core(self, state: RoundState) -> set[str] | None:
        """Requests that get placement variables: all, or under a backlog the most urgent ones
        that can still make it, then the oldest of the rest (None: all)."""
        cap = self._cap(state)
        if len(state.requests) <= cap:
            return None
        alive = {r.id: outlook(state, r).alive for r in state.requests}
        ranked = sorted(state.requests, key=lambda r: (not alive[r.id],
                                                       r.deadline_us if alive[r.id] else r.arrival_us, r.id))
        return {r.id for r in ranked[:cap]}

    def _left(self, t0: float) -> float:
        """Seconds left of the limit (the whole limit, whatever the wall clock, when deterministic)."""
        if self.deterministic:
            return self.limit_s
        return self.limit_s - (time.perf_counter() - t0)

    def plan(self, state: RoundState, started: float | None = None) -> RoundPlan:
        """`started`: when the decision began (perf_counter), if before this call (a wrapper's
        admission gate, margins.ShownEarly): the time limit counts from there."""
        plan = self._plan_round(state, started)
        if not self.immediate_start:
            return plan
        plan = reserve_idle(state, plan)
        return pack_idle(state, plan) if self.pack else plan

    def _plan_round(self, state: RoundState, started: float | None = None) -> RoundPlan:
        t0 = time.perf_counter() if started is None else started
        if not state.requests:
            return make_plan(state, [], backend=self.backend, status=PlanStatus.OPTIMAL, objective=0.0, bound=0.0)
        # the stop time of every stage: the limit less what laying the plan out takes (none when
        # deterministic: then no decision may depend on the wall clock)
        layout_s = 0.0 if self.deterministic else 0.001 + self._late + 1.5 * self._layout_rate.predict(
            max(self._decisions, 2 * state.cluster.gpus))
        stop = None if self.deterministic else t0 + self.limit_s - layout_s
        self._ts.stop = stop
        self._forecast.observe(state)
        self._forward.forget_before(state.now_us)
        self._given_up.intersection_update(r.id for r in state.requests)
        # lazy warm starts where the model cannot be capped (build's max_pairs): small rounds,
        # most certified before greedy or TetriServe is needed; else greedy first, anytime
        lazy = (len(state.requests) <= self._cap(state)
                and len(state.requests) * sum(map(len, state.sets.values())) <= MAX_PAIRS)
        heuristics = self._warm_starts(state, t0, stop, layout_s, lazy)
        fill = False
        if past(stop):  # the warm starts ran to the stop: greedy's plan (so far: the most urgent requests) answers
            decisions, meta = self._fallback(heuristics[:1], "time limit in the warm starts")
        else:
            # time kept back for filling leftovers and laying the plan out
            reserve = layout_s if self.deterministic else (
                layout_s + 0.001 + 1.5 * self._finish_rate.predict(len(state.requests)))
            roll = self._rollout_budget(state, t0, reserve)
            finish = reserve
            reserve += roll or 0.0  # the rollout runs after the search: its time is kept back from it
            placed = self.core(state)
            decisions, meta = self._decide(state, t0, placed, reserve, heuristics, stop)
            t_fin = time.perf_counter()
            # greedy's own plan tried every request on loads that only grew since: nothing more fits
            # (skipping the fill saves 12 ms of a 180 ms decision at 2,000 pending on 64 GPUs)
            fill = placed is not None and meta["backend"] != "greedy"
            if fill:
                held = {i for d in decisions for i in members(d[0])}  # a fallback plan may already hold some of them
                kept = set(meta["kept"] or ())
                outside = sorted((r for r in state.requests if r.id not in placed and r.id not in held),
                                 key=lambda r: (r.id not in kept, r.deadline_us if r.id in kept else r.arrival_us, r.id))
                decisions = fill_leftover(state, decisions, outside, ordered=True, stop=stop)
                self._finish_rate.observe(time.perf_counter() - t_fin, len(state.requests))
            if placed is not None:
                meta["note"] = meta["note"] or f"placement for the {len(placed)} most urgent of {len(state.requests)}"
            if roll is not None and not self._settled(state, meta) and (
                    self.deterministic or self._left(t0) - finish >= roll):
                t_roll = time.perf_counter()
                try:
                    decisions, meta, units = self._rollout(state, decisions, meta, stop)
                    self._roll_rate.observe(time.perf_counter() - t_roll, units)
                except OutOfTime:  # stopped at the stop time: this round's plan stands
                    self._roll_rate.aborted(time.perf_counter() - t_roll, self._rollout_units(state))
        t_lay = time.perf_counter()
        plan = make_plan(state, decisions, **meta, solve_ms=(t_lay - t0) * 1e3)  # (before the layout, as always)
        if not self.deterministic:
            self._layout_rate.observe(time.perf_counter() - t_lay, max(1, len(decisions)))
        self._decisions = max(len(decisions), int(0.9 * self._decisions))
        if stop is not None:  # how far past its stop (and layout) the decision ended: kept back next time
            late = time.perf_counter() - (stop + layout_s - self._late)
            self._late = min(LATE_SHARE * self.limit_s, late) if late > self._late else 0.9 * self._late
        self._last = {i: a.gpus for a in plan.assignments for i in a.requests}
        self._last_kept = plan.kept or ()
        return plan

    def _tetriserve_start(self, state: RoundState, t0: float, reserve: float):
        """TetriServe's plan as a warm start (through the rollout's memo, which it then serves too),
        when its predicted cost fits and it ends before the stop time (else None)."""
        ts = self._forward.cached(state)
        if ts is None:
            cells = len(state.requests) * (state.cluster.gpus + 1)
            if not self.deterministic and self._ts_rate.predict(cells) >= TETRISERVE_SHARE * (self._left(t0) - reserve):
                self._ts_rate.skipped()
                return None
            t = time.perf_counter()
            try:
                ts = self._forward.plan(state)
            except OutOfTime:
                self._ts_rate.aborted(time.perf_counter() - t, cells)
                return None
            self._ts_rate.observe(time.perf_counter() - t, cells)  # only plans computed here: a memo hit costs nothing
        return ("tetriserve", decisions_of(ts), ts.kept or ())

    def _rollout_units(self, state: RoundState) -> int:
        """The rollout's predicted work: TetriServe's DP cells over the rounds it plays, twice
        (once per round state: asked before the search and after the rollout)."""
        if self._units[0] is not state:
            alive = [r for r in state.requests if outlook(state, r).alive]
            rounds = -(-(max(r.deadline_us for r in alive) - state.now_us) // state.round_us) if alive else 0
            self._units = (state, 2 * len(alive) * (state.cluster.gpus + 1) * rounds)
        return self._units[1]

    def _rollout_budget(self, state: RoundState, t0: float, reserve: float) -> float | None:
        """Seconds to keep back for the rollout (0 when deterministic), or None: no rollout this
        round (off, or its predicted cost does not fit its share of what is left)."""
        if not self.rollout:
            return None
        if self.deterministic:
            return 0.0
        need = self._roll_rate.predict(self._rollout_units(state))
        if need > ROLLOUT_SHARE * (self._left(t0) - reserve):
            self._roll_rate.skipped()
            return None
        return need

    def _settled(self, state: RoundState, meta: dict) -> bool:
        """No rollout for this plan: a lone request, kept by a plan proved optimal for the round
        (what TetriServe's plan could add is a forward play that meets it where this plan's does
        not; in none of the 3,990 such rounds of the nine shipped workloads did it)."""
        return (len(state.requests) == 1 and meta.get("status") == PlanStatus.OPTIMAL
                and tuple(meta.get("kept") or ()) == (state.requests[0].id,))

    def _rollout(self, state: RoundState, decisions: list, meta: dict,
                 stop: float | None = None) -> tuple[list, dict, int]:
        """This round's decisions, or the candidate that meets more of the known requests when each
        is played forward with TetriServe (rollout.py): TetriServe's plan, and (`giveup`) this
        plan without the kept requests its own forward play misses; and the work units it took.
        The give-up candidates are tried only before `stop` (perf_counter; None: always)."""
        ts = self._forward.plan(state)  # the warm start's, or played already by last round's rollout
        ts_dec, ts_kept = decisions_of(ts), ts.kept or ()
        same = sorted(map(repr, ts_dec)) == sorted(map(repr, decisions))
        if same and not self.giveup:
            return decisions, meta, 0
        kept = tuple(meta.get("kept") or ())
        mine_ids = self._forward.play(state, decisions, kept)
        mine = len(mine_ids)
        units = self._rollout_units(state)
        if mine >= len(state.requests):  # every request met: no candidate can meet more (most light rounds)
            return decisions, meta, units
        best, swap = mine, None
        if not same:
            theirs = self._forward.met(state, ts_dec, ts_kept, beat=mine)  # may stop once it cannot exceed mine
            if theirs > best:
                best, swap = theirs, ("tetriserve", list(ts_dec), tuple(ts_kept))
        if self.giveup:
            ties = []
            for drop, dec in self._giveup_candidates(state, decisions, kept, mine_ids):
                if past(stop):
                    break
                units += self._rollout_units(state) // 2
                left = tuple(i for i in kept if i not in drop)
                got = self._forward.met(without(state, drop), dec, left, beat=best - 1)
                if got > best:
                    best, swap = got, ("giveup", dec, left)
                elif got == mine == best and self.futures:
                    ties.append((drop, dec, left))
            # as many known requests met either way: the sampled futures decide
            if ties and swap is None and not past(stop):
                swap, gain, units2 = self._future_choice(state, decisions, kept, ties)
                units += units2
        if swap is None:
            return decisions, meta, units
        name, dec, swap_kept = swap
        if name == "tetriserve":
            meta = dict(meta, backend="tetriserve", status=PlanStatus.FALLBACK, objective=None, bound=None,
                        kept=swap_kept, note=f"{ROLLOUT_CHOICE} {best} vs {mine}")
            return dec, meta, units
        gone = sorted(set(kept) - set(swap_kept))
        self._given_up.update(gone)  # for good: the model may not keep them again (the forward play assumed so)
        why = f"{gain} more in {FUTURES} sampled futures" if name == "future" else f"{best} vs {mine}"
        meta = dict(meta, status=PlanStatus.FEASIBLE, objective=None, bound=None, kept=swap_kept,
                    note=f"rollout: giving up {', '.join(gone)} meets {why}")
        return dec, meta, units

    def _future_choice(self, state: RoundState, decisions: list, kept: tuple[str, ...], ties: list):
        """Among give-up candidates that meet as many known requests as this round's plan, the one
        that meets the most more over FUTURES sampled futures (the same futures for every plan),
        as ("future", decisions, kept), its gain and the work units; (None, 0, units) if none gains."""
        by_id = {r.id: r for r in state.requests}
        due = max(by_id[i].deadline_us for drop, _, _ in ties for i in drop)
        rounds = max(1, -(-(due - state.end_us) // state.round_us))
        futures = [self._forecast.sample(state, rounds, state.round_index * 64 + j) for j in range(FUTURES)]
        if not any(futures):
            return None, 0, 0
        base = sum(self._forward.play_future(state, decisions, kept, f) for f in futures)
        best, gain = None, FUTURE_MARGIN - 1
        for drop, dec, left in ties:
            got = sum(self._forward.play_future(without(state, drop), dec, left, f) for f in futures) - base
            if got > gain:
                best, gain = ("future", dec, left), got
        units = (1 + len(ties)) * FUTURES * self._rollout_units(state) // 2
        return best, gain, units

    def _giveup_candidates(self, state: RoundState, decisions: list, kept: tuple[str, ...],
                           met: frozenset[str]) -> list[tuple[frozenset[str], list]]:
        """This round's plan without kept requests that run this round but that its forward play
        misses (each alone, the two largest by GPU-time this round, and all of them together),
        their GPUs filled best effort by the others, alive ones by deadline first."""
        gpu_us: dict[str, int] = {}
        by_id = {r.id: r for r in state.requests}
        for rid, g, n in decisions:
            if isinstance(rid, str) and rid in by_id:
                gpu_us[rid] = gpu_us.get(rid, 0) + len(g) * n * state.step_us(by_id[rid], len(g))
        lost = sorted((i for i in kept if i in gpu_us and i not in met), key=lambda i: (-gpu_us[i], i))
        if not lost:
            return []
        drops = [frozenset([i]) for i in lost[:2]]
        if len(lost) > 1:
            drops.append(frozenset(lost))
        out = []
        for drop in drops:
            base = [d for d in decisions if not (set(members(d[0])) & drop)]
            held = {i for d in base for i in members(d[0])}
            rest = sorted((r for r in state.requests if r.id not in held and r.id not in drop),
                          key=lambda r: (not outlook(state, r).alive, r.deadline_us, r.id))
            out.append((drop, fill_leftover(state, base, rest, ordered=True)))
        return out

    def _warm_starts(self, state: RoundState, t0: float, stop: float | None, reserve: float,
                     lazy: bool = False) -> list:
        """(name, decisions, kept) of the fast plans the MIP starts from and falls back to;
        greedy first, always (anytime: it stops at `stop`, and then nothing else is computed).
        With `lazy` (small rounds, where every plan costs a ms at most), the greedy, TetriServe and
        previous-round entries are functions computed only when a caller reaches them (`_resolved`):
        most light rounds are certified by the separable or placement plan before them (TetriServe's
        plan sets a capped model's candidate sets, so not lazy there)."""
        def greedy(batching: bool = False):
            dec, kept = greedy_decisions(state, batching=batching, stop=stop)
            return ("greedy-batching" if batching else "greedy"), dec, tuple(kept)

        out: list = [greedy if lazy else greedy()]
        if not lazy and past(stop):
            return out
        if self.batching:
            out.append((lambda: greedy(True)) if lazy else greedy(True))
        if lazy:
            out.append(lambda: self._tetriserve_start(state, t0, reserve))
        else:
            ts = self._tetriserve_start(state, t0, reserve)
            if ts is not None:
                out.append(ts)
        def previous():
            prev = [(r.id, self._last[r.id], state.max_steps(r, len(self._last[r.id]))) for r in state.requests
                    if r.id in self._last and len(self._last[r.id]) in state.degrees]
            prev = fitting(state, [d for d in prev if d[2] > 0])
            ids = {d[0] for d in prev}
            return "previous-round", prev, tuple(i for i in self._last_kept if i in ids)

        if self._last:  # the previous round's placement, continued
            out.append(previous if lazy else previous())
        return out

    def _fallback(self, heuristics, note: str, rm: RoundModel | None = None, best=None, bound=None):
        """The best warm start scored in the model; without a model (or when none is expressible)
        TetriServe's plan where it was computed (it meets more deadlines than greedy on every
        workload measured), else greedy's."""
        heuristics = list(_resolved(heuristics))
        if best is None:
            name, dec, kept = next((h for h in heuristics if h[0] == "tetriserve"), heuristics[0])
            val = None
        else:  # the keep flags the model allows for this plan
            name, val, sol, dec, _ = best
            kept = tuple(i for i, v in rm.keep.items() if sol[v])
        return list(dec), dict(backend=name, status=PlanStatus.FALLBACK, objective=val, bound=bound, kept=tuple(kept), note=note)

    def _search_limit(self, rm: RoundModel, left_s: float) -> float:
        """The solver's own limit out of what is left: less its overshoot under load, and less the
        overrun learnt per model variable (CP-SAT loads a model before it looks at its clock:
        25-30 ms for 3,000 variables on a busy machine, which ran a 180 ms decision to 206 ms)."""
        if self.deterministic:
            return left_s
        return SEARCH_SHARE * left_s - 0.001 - self._overrun_rate * len(rm.model.names)

    def _observe_overrun(self, rm: RoundModel, outcome) -> None:
        """Learn the overrun per variable: up at once to a new worst, down slowly (a p99 target),
        each observation at most half the limit (a process that lost the CPU for a second, as one
        did under a load average of 12, kept the search off for 76 rounds of 168)."""
        if self.deterministic:
            return
        if outcome.overrun_s is None:  # the search ended before its limit: relax, as on a skip
            self._overrun_rate *= 0.9
            return
        seen = min(outcome.overrun_s, 0.5 * self.limit_s) / max(1, len(rm.model.names))
        self._overrun_rate = max(seen, 0.9 * self._overrun_rate + 0.1 * seen)

    def _observe_load(self, rm: RoundModel, outcome) -> None:
        """Learn a slice's model load per variable (`backends.solve_cpsat`'s `load_s`): a slice that
        ran past its own limit measures it (up at once, down slowly: a p99 target, one observation
        at most half the limit); a quicker slice bounds it from above (down slowly); no slice at
        all (not even the load fitted) relaxes it by 10%, down to the least measured, so that one
        slow round does not keep the search off for good; before any measurement, down to the prior
        (relaxed below it, a cold policy's first slice on a 4,000-variable model was let start with
        37 ms left and loaded for 80: that round's decision ended 5-13 ms past limit + 5 at 64 GPUs /
        128 pending, `benchmarks/round_solve.py`)."""
        if self.deterministic:
            return
        n = max(1, len(rm.model.names))
        if outcome.load_s is not None:
            seen = min(outcome.load_s, 0.5 * self.limit_s) / n
            self._load_rate = max(seen, 0.9 * self._load_rate + 0.1 * seen)
            self._load_floor = seen if self._load_floor is None else min(self._load_floor, seen)
        elif outcome.slice_s is not None:
            self._load_rate = min(self._load_rate, 0.9 * self._load_rate + 0.1 * outcome.slice_s / n)
        else:
            self._load_rate = max(LOAD_PRIOR if self._load_floor is None else self._load_floor, 0.9 * self._load_rate)

    def _search_params(self, rm: RoundModel, left_s: float) -> dict:
        """Backend parameters for this round's search (CP-SAT only)."""
        if self.backend != "cpsat":
            return {}
        if len(rm.model.names) > LARGE_MODEL or left_s < SHORT_S:
            # big rounds or short limits: presolve and LP linearisation eat the whole limit
            # before the first improving move; plain search from the hint does better
            # (benchmarks/round_solve.py; presolve helps proofs when there is time; turning
            # them off on small light rounds too cost met deadlines at 3-5x, docs/solver.md);
            # probing at level 1, not CP-SAT's default (docs/solver.md 2, items 15 and 18)
            return dict(cp_model_presolve=False, linearization_level=0, double=False, cp_model_probing_level=1)
        # small models: a short slice without presolve first proves most light rounds in about a
        # ms (presolve and proof were 5-15 ms a round, most of the policy's CPU); unproven, the
        # full search goes on from its incumbent (backends.solve_cpsat)
        return dict(quick_s=min(QUICK_S, QUICK_SHARE * self.limit_s))

    def _decide(self, state: RoundState, t0: float, placed: set[str] | None, reserve: float, heuristics: list,
                stop: float | None):
        n_placed = len(state.requests) if placed is None else len(placed)
        n_alive = sum(outlook(state, r).alive for r in state.requests)
        est_vars = 2 * min(1200, n_placed * 32) + 4 * (n_alive + n_placed)
        if not self.deterministic and self._build_rate.predict(est_vars) > BUILD_SHARE * (self._left(t0) - reserve):
            self._build_rate.skipped()
            return self._fallback(heuristics, "time limit before the model")
        t_build = time.perf_counter()
        hinted: dict[str, tuple] = {}
        for _, dec, _ in (h for h in heuristics if not callable(h)):
            for rid, g, _ in dec:
                if isinstance(rid, str):
                    hinted[rid] = hinted.get(rid, ()) + (g,)
        stop = None if stop is None else min(stop, t0 + self.limit_s - reserve - MIN_SEARCH_S)
        try:
            rm = build(state, max_pairs=MAX_PAIRS, placed=placed, hinted=hinted, joint_capacity=self.joint_capacity,
                       deadline=stop, batching=self.batching, convex=self.convex)
        except OutOfTime:
            self._build_rate.observe(time.perf_counter() - t_build, est_vars)
            return self._fallback(heuristics, "time limit while building the model")
        if self.forecast:  # wide requests leave room for the arrivals they would shut out (horizon.py)
            add_forecast(rm, self._forecast, frozenset(self._last_kept))
        for i in self._given_up.intersection(rm.keep):  # given up by the rollout (_rollout): best effort only
            rm.model.ub[rm.keep[i]] = 0
        best = None
        # the bound knows single-request options only: no certificate for a model with batches
        ub, candidates, alone, bound_kind, blocks, owns = None, _resolved(heuristics), None, "separable", None, None
        if self.certify and not rm.batches:
            owns = request_options(rm)  # (once: best_alone, beyond and proved share them and their option values)
            alone = best_alone(rm, owns)
            ub, sep_dec, sep_kept = separable(rm, alone)

            def tighter():
                """Reached where the separable plan falls short of its bound, on rounds of a few
                requests: the relaxation that keeps every GPU's row, searched above the best plan
                so far (certify.beyond), and its best plan, tried before the warm starts (most
                rounds it certifies then skip greedy's and TetriServe's)."""
                nonlocal ub, bound_kind, blocks
                if self.symmetry and len(rm.keep) > 2:  # two requests: few placements, the cut costs more than it saves
                    blocks = swaps(rm)
                got = beyond(rm, best[1] if best else -1 << 62, [(w.a, w.b) for w in blocks or ()], owns=owns)
                if got is None or got[0] >= ub:
                    return None
                ub, bound_kind = got[0], "placement"
                if got[1] is None:  # nothing above the best so far: it is optimal
                    return None
                return ("placement", [(i, g, n) for i, g, n, _ in got[1] if g and n],
                        tuple(i for i, _, _, k in got[1] if k))

            candidates = itertools.chain([("separable", sep_dec, sep_kept)], _resolved([tighter]), candidates)
        seen = []
        for name, dec, kept in candidates:
            if past(stop):
                break  # the warm starts completed so far are the candidates
            key = (sorted(map(repr, dec)), sorted(kept))  # a batch's id is a tuple of ids
            if key in seen:  # greedy and TetriServe often agree on light load
                continue
            seen.append(key)
            if name == "separable" and len(fitting(state, dec)) < len(dec):
                continue  # lone bests that overflow a GPU (complete would say so at ten times the cost)
            sol = complete(rm, dec, kept, self.joint_capacity)
            if sol is not None and (best is None or rm.model.value(sol) > best[1]):
                best = (name, rm.model.value(sol), sol, dec, kept)
            if best is not None and ub is not None and best[1] >= ub:
                break  # optimal: the later warm starts cannot do better
        built_s = time.perf_counter() - t_build
        if best is not None and ub is not None:
            if best[1] >= ub:  # the warm start is optimal for the model: nothing left to search
                self._build_rate.observe(built_s, est_vars)
                name, val, sol, dec, _ = best
                status = PlanStatus.FEASIBLE if rm.restricted else PlanStatus.OPTIMAL
                return list(dec), dict(backend=self.backend, status=status, objective=float(val), bound=float(ub),
                                       kept=tuple(i for i, v in rm.keep.items() if sol[v]),
                                       note=f"{name} plan meets the {bound_kind} bound")
        t_extra = time.perf_counter()
        pairs = None
        if self.symmetry:  # after the warm starts: they are completed without the rows, then moved onto them
            pairs = swaps(rm) if blocks is None else blocks
            if add_symmetry_rows(rm, pairs) and best is not None:
                best = (best[0], best[1], canonical(rm, pairs, best[2]), best[3], best[4])
        if (self.joint_proof and self.hints and self.backend == "cpsat" and best is not None and ub is not None
                and not past(stop)
                and proved(rm, best[1], [(w.a, w.b) for w in pairs or ()], owns=owns)):  # (at most 3,000 nodes: a few ms)
            # nothing above the best warm start: it is what CP-SAT would return (started from this
            # hint, it reports only strictly better solutions), so answer it as CP-SAT would
            self._build_rate.observe(built_s + time.perf_counter() - t_extra, est_vars)
            sol = best[2]
            status, note = PlanStatus.OPTIMAL, f"{best[0]} plan meets the joint placement bound"
            if rm.restricted:
                status, note = PlanStatus.FEASIBLE, "restricted model (capped sets or unplaced backlog)"
            return rm.decisions(sol), dict(backend=self.backend, status=status, objective=float(best[1]),
                                           bound=float(best[1]) if not rm.restricted else None,
                                           kept=tuple(i for i, v in rm.keep.items() if sol[v]), note=note)
        if self.split and self.backend == "cpsat":  # per-request value variables (certify.split_objective)
            hint = split_objective(rm, best[2] if best else None, alone)
            if best is not None:
                best = (best[0], best[1], hint, best[3], best[4])
        built_s += time.perf_counter() - t_extra
        left_s = self._left(t0) - reserve
        if left_s < MIN_SEARCH_S:
            self._build_rate.observe(built_s, est_vars)
            return self._fallback(heuristics, "time limit before the search", rm, best)
        outcome, error = None, ""
        try:
            params = self._search_params(rm, left_s)
            stall_s = None if self.deterministic else max(0.005, STALL_SHARE * self.limit_s)
            if self.deterministic and self.backend == "cpsat":
                params["max_deterministic_time"] = left_s
                left_s = 60.0 + 20 * left_s  # the wall clock only as a safety net
            left_s = self._search_limit(rm, left_s)
            if left_s < MIN_SEARCH_S:
                self._overrun_rate *= 0.8  # as Rate.skipped: one slow round must not keep the search off
                self._build_rate.observe(built_s, est_vars)
                return self._fallback(heuristics, "time limit before the search (solver overrun)", rm, best)
            if self.backend == "cpsat" and not self.deterministic:
                params["load_s"] = self._load_rate * len(rm.model.names)
            outcome = BACKENDS[self.backend](rm.model, left_s, seed=self.seed, workers=self.workers,
                                             hint=best[2] if (best and self.hints) else None,
                                             stall_s=stall_s, min_gain=rm.weights.keep / 2, **params)
            self._observe_overrun(rm, outcome)
            if self.backend == "cpsat":
                self._observe_load(rm, outcome)
        except Exception as e:  # a solver error must never lose the round: fall back below
            outcome, error = None, f"solver error: {type(e).__name__}: {e}"
        # the estimate covers building, completing the warm starts and translating for the solver
        self._build_rate.observe(built_s + (outcome.setup_s if outcome else 0.0), est_vars)
        if outcome is None or outcome.solution is None or (best and rm.model.value(outcome.solution) < best[1]):
            note = error or ("time limit before a solution" if outcome is None or outcome.solution is None
                             else "heuristic better")
            return self._fallback(heuristics, note, rm, best, outcome.bound if outcome else None)
        sol = outcome.solution
        kept = tuple(i for i, v in rm.keep.items() if sol[v])
        status, bound, note = outcome.status, outcome.bound, ""
        if rm.restricted:  # optimal among the capped candidate sets only: no proof for the full round
            status, bound, note = PlanStatus.FEASIBLE, None, "restricted model (capped sets or unplaced backlog)"
        return rm.decisions(sol), dict(backend=self.backend, status=status, objective=outcome.objective,
                                       bound=bound, kept=kept, note=note)

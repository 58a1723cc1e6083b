"""The round engine: snapshot -> plan -> check -> dispatch -> apply completions and failures.

One engine keeps the progress of every request it was given (steps done, steps in flight, the
GPUs holding its latent) and is the only code that changes it. Its drivers differ only in time
and executor: `simulate` runs it on a `VirtualClock` with the simulated executor, the server's
`Scheduler` on the wall clock with the sim/cpu/cuda executors, planning round k+1 while round
k runs (a snapshot counts the steps in flight as done). A cluster of nodes runs one engine per
node with a router above that `submit`s to one of them.

Executors get a checked `RoundPlan` and a `WorkItem` per request, run it in the plan's start
order, and report each assignment as it ends (`Completion`); a broken round raises, and the
engine gives the unreported steps back (`fail`).

A batched assignment (`Assignment.batch`) advances every member by its steps. Immediate starts
(`add_immediate`, immediate.py): requests arriving inside a round may start at once on GPUs the
round's checked plan leaves idle; the combined plan is checked again before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping, Protocol

from .immediate import busy_intervals, occupy, start_on_idle
from .instance import Cluster
from .plan import Assignment, RoundPlan, check_plan
from .profile import CostProfile
from .state import RequestState, RoundState


class ClockLike(Protocol):
    def now_us(self) -> int: ...

    def sleep_until(self, us: int) -> None: ...


class VirtualClock:
    """Simulated time: it reads what its driver set; sleeping takes no time (nothing waits)."""

    def __init__(self, now_us: int = 0):
        self.t = now_us

    def now_us(self) -> int:
        return self.t

    def set(self, us: int) -> None:
        self.t = us

    def sleep_until(self, us: int) -> None:
        pass


@dataclass(frozen=True)
class WorkItem:
    """What an executor needs about a request besides the assignment itself."""

    id: str
    prompt: str
    width: int
    height: int
    total_steps: int
    done_steps: int      # steps finished before this round
    seed: int
    guidance_scale: float | None = None   # the API's, when given (None: the model's default)
    negative_prompt: str | None = None


@dataclass(frozen=True)
class Completion:
    """An assignment that ran to its end; `image` (PNG bytes) when it ran the request's last step."""

    assignment: Assignment
    finish_us: int              # on the engine's clock; includes the VAE decode when finished
    image: bytes | None = None
    images: tuple[tuple[str, bytes], ...] = ()  # a batch: (member, PNG) for each member it finished

    def image_of(self, rid: str) -> bytes | None:
        return dict(self.images).get(rid, self.image if rid == self.assignment.request else None)


class ExecutorFailure(RuntimeError):
    """A round broke (a worker died, a collective timed out): unreported assignments are lost."""


class Executor(Protocol):
    name: str
    resumable: bool          # after a failure, requests resume from their last finished step
    concurrent_rounds: bool  # may run round k+1 while round k's tail (decode) still runs

    def start(self, clock: ClockLike) -> None:
        """Bring workers up; called once before the first round."""

    def execute(self, plan: RoundPlan, work: Mapping[str, WorkItem], round_index: int,
                on_complete: Callable[[Completion], None]) -> None:
        """Run one round's assignments in their planned start order (blocking); report each."""

    def close(self) -> None:
        """Stop workers; called once at shutdown."""

    # optional: `forget(request_id)`, called when the engine drops a request (cancelled, failed):
    # free what the executor keeps of it (the runtime: its checkpoint, latent shards, conditioning).


class InvalidPlan(RuntimeError):
    """A plan broke a rule of `check_plan`; nothing of it was dispatched."""


@dataclass(eq=False)
class Tracked:
    """A request inside an engine. Only the engine changes the progress fields below `deadline_us`."""

    id: str
    width: int
    height: int
    steps: int
    arrival_us: int
    deadline_us: int
    done: int = 0                 # steps confirmed finished
    inflight: int = 0             # steps dispatched in rounds not yet reported
    location: tuple[int, ...] = ()          # GPUs that hold the latent of the finished steps
    planned_location: tuple[int, ...] = ()  # ... once the rounds in flight succeed
    finish_us: int | None = None

    @property
    def planned_remaining(self) -> int:
        """Steps left once the rounds in flight succeed (what the next round is planned on)."""
        return self.steps - self.done - self.inflight

    @property
    def finished(self) -> bool:
        return self.finish_us is not None

    def work_item(self) -> WorkItem:
        """How executors see this request (the server's tasks add their prompt and seed)."""
        return WorkItem(id=self.id, prompt="", width=self.width, height=self.height, total_steps=self.steps,
                        done_steps=self.steps - self.planned_remaining, seed=0)


@dataclass(frozen=True)
class RoundRun:
    """One synchronous round (`RoundEngine.run_round`): its state, checked plan and finished requests."""

    state: RoundState
    plan: RoundPlan
    finished: tuple[Tracked, ...]


class RoundEngine:
    """The requests of one cluster (or node) and their progress, round after round."""

    def __init__(self, *, cluster: Cluster, profile: CostProfile, degrees: tuple[int, ...], round_us: int,
                 executor: Executor | None = None, clock: ClockLike | None = None):
        self.cluster = cluster
        self.profile = profile
        self.degrees = degrees
        self.round_us = round_us
        self.executor = executor
        self.clock = clock
        self.pending: dict[str, Tracked] = {}  # unfinished requests, in submission order

    # -- requests in and out ---------------------------------------------------------------------
    def submit(self, req: Tracked) -> None:
        if req.id in self.pending:
            raise ValueError(f"request {req.id!r} submitted twice")
        self.pending[req.id] = req

    def drop(self, rid: str) -> Tracked | None:
        """Forget a request (cancelled); later reports about it are ignored, and the executor frees
        what it keeps of it (`forget`, where it has one)."""
        forget = getattr(self.executor, "forget", None)
        if forget is not None:
            forget(rid)
        return self.pending.pop(rid, None)

    # -- a round ---------------------------------------------------------------------------------
    def snapshot(self, boundary_us: int, round_index: int, cutoff_us: int | None = None,
                 not_started: Mapping[str, int] | None = None) -> RoundState:
        """The state round `round_index` (starting at boundary_us) meets if the rounds in flight
        succeed; requests that arrived after cutoff_us (default: the boundary) wait for the next.
        `not_started`: steps dispatched for rounds from boundary_us on, still to do at it."""
        cutoff = boundary_us if cutoff_us is None else cutoff_us
        back = not_started or {}
        reqs = tuple(RequestState(id=t.id, width=t.width, height=t.height,
                                  remaining_steps=t.planned_remaining + back.get(t.id, 0), deadline_us=t.deadline_us,
                                  arrival_us=t.arrival_us, location=t.location if t.id in back else t.planned_location)
                     for t in self.pending.values()
                     if t.planned_remaining + back.get(t.id, 0) > 0 and t.arrival_us <= cutoff)
        return RoundState(now_us=boundary_us, round_us=self.round_us, cluster=self.cluster, profile=self.profile,
                          degrees=self.degrees, requests=reqs, round_index=round_index)

    def dispatch(self, state: RoundState, plan: RoundPlan) -> tuple[RoundPlan, dict[str, WorkItem]]:
        """Check the plan, mark its steps in flight; returns what to hand the executor.

        Assignments of requests dropped since the snapshot are left out (a plan may come back after
        a cancellation); the rest of the plan stands, as checked against the snapshot.
        """
        self.check(state, plan)
        live = tuple(a for a in plan.assignments if any(i in self.pending for i in a.requests))
        if len(live) != len(plan.assignments):
            plan = replace(plan, assignments=live)
        work = {i: self.pending[i].work_item() for a in live for i in a.requests if i in self.pending}
        for a in sorted(live, key=lambda a: a.end_us):
            for i in a.requests:
                t = self.pending.get(i)
                if t is not None:
                    t.inflight += a.steps
                    t.planned_location = a.gpus
        return plan, work

    def add_immediate(self, state: RoundState, plan: RoundPlan, arrivals: Iterable[Tracked]
                      ) -> tuple[RoundState, RoundPlan]:
        """Submit `arrivals` (arriving inside the round of `state`, in arrival order) and start each
        at once where the rule of immediate.py finds idle GPUs; the plan's own assignments stay as
        they are. Returns the state with the arrivals in it (to check the plan on) and the plan
        with the immediate starts added."""
        busy = busy_intervals(state, plan.assignments)
        added, seen = [], []
        for t in arrivals:
            self.submit(t)
            r = RequestState(id=t.id, width=t.width, height=t.height, remaining_steps=t.planned_remaining,
                             deadline_us=t.deadline_us, arrival_us=t.arrival_us)
            seen.append(r)
            a = start_on_idle(state, r, busy)
            if a is not None:
                occupy(busy, a)
                added.append(a)
        if seen:
            state = replace(state, requests=state.requests + tuple(seen))
        if added:
            plan = replace(plan, assignments=plan.assignments + tuple(added))
        return state, plan

    def apply(self, c: Completion) -> Tracked | None:
        """Count a finished assignment; returns the request when this was its last step."""
        done = self.apply_all(c)
        return done[0] if done else None

    def apply_all(self, c: Completion) -> list[Tracked]:
        """Count a finished assignment for each request it advances (a batch: every member);
        returns the requests it finished."""
        a = c.assignment
        out = []
        for i in a.requests:
            t = self.pending.get(i)
            if t is None:  # dropped meanwhile
                continue
            t.inflight -= a.steps
            t.done += a.steps
            t.location = a.gpus
            if t.done < t.steps:
                continue
            t.finish_us = c.finish_us
            del self.pending[t.id]
            out.append(t)
        return out

    def fail(self, lost: Iterable[Assignment], resumable: bool = True) -> int:
        """Give the steps of unreported assignments back; returns how many steps go round again.

        Their latents are gone with the failed set, so those requests resume from their last
        finished step anywhere. If the executor is not resumable (its workers restarted empty),
        every started request begins again from step 0.
        """
        steps = 0
        for a in lost:
            for i in a.requests:
                t = self.pending.get(i)
                if t is None:
                    continue
                t.inflight -= a.steps
                t.location = t.planned_location = ()
                steps += a.steps
        if not resumable:
            for t in self.pending.values():
                if t.done:
                    steps += t.done
                    t.done = 0
                    t.location = t.planned_location = ()
        return steps

    def run_round(self, plan_fn: Callable[[RoundState], RoundPlan], boundary_us: int,
                  round_index: int, arrivals: Iterable[Tracked] = ()) -> RoundRun:
        """snapshot -> plan -> check -> dispatch -> execute -> apply, in one call (the simulator's
        round; also what a test drives with a fake executor). `arrivals`: requests arriving inside
        this round, started at once on idle GPUs (add_immediate). An executor failure re-queues the
        unreported steps and re-raises."""
        state, plan = self.plan_round(plan_fn, boundary_us, round_index)
        arrivals = list(arrivals)
        full = state
        if arrivals:
            self.check(state, plan)  # the policy's plan on its own state, before adding to it
            full, plan = self.add_immediate(state, plan, arrivals)
        return self.execute_round(state, full, plan)

    def plan_round(self, plan_fn: Callable[[RoundState], RoundPlan], boundary_us: int,
                   round_index: int) -> tuple[RoundState, RoundPlan]:
        """The round's snapshot and the policy's plan for it (not checked, nothing dispatched):
        the first half of run_round, for a driver that adds immediate starts between the halves
        (several nodes routing mid-round arrivals, cluster/multinode.py)."""
        assert self.executor is not None, "run_round needs an executor"
        if isinstance(self.clock, VirtualClock):
            self.clock.set(boundary_us)
        state = self.snapshot(boundary_us, round_index)
        return state, plan_fn(state)

    @staticmethod
    def check(state: RoundState, plan: RoundPlan) -> None:
        why = check_plan(state, plan)
        if why is not None:
            raise InvalidPlan(f"round {state.round_index}: {why}")

    def execute_round(self, state: RoundState, full: RoundState, plan: RoundPlan) -> RoundRun:
        """Dispatch, execute and apply `plan` (checked on `full`: `state` plus the requests
        add_immediate submitted); the second half of run_round."""
        plan, work = self.dispatch(full, plan)
        finished: list[Tracked] = []
        reported: set[int] = set()

        def on_complete(c: Completion) -> None:
            reported.add(id(c.assignment))
            finished.extend(self.apply_all(c))

        if plan.assignments:
            try:
                self.executor.execute(plan, work, state.round_index, on_complete)
            except Exception:
                self.fail([a for a in plan.assignments if id(a) not in reported],
                          getattr(self.executor, "resumable", True))
                raise
        return RoundRun(state=state, plan=plan, finished=tuple(finished))

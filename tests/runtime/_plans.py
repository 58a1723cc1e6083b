"""Plans built by the scheduler itself, shared by the plan and executor tests."""


def urgent_and_wide_plan():
    """A 1-GPU request due inside the round and a 2-GPU one sharing GPU 0, laid out by the
    scheduler's own make_plan: the urgent one is planned first although its set is smaller."""
    from tetriopt.instance import make_cluster
    from tetriopt.plan import make_plan
    from tetriopt.profile import load_profile
    from tetriopt.state import RequestState, RoundState

    prof = load_profile("flux.1-dev-h100")
    reqs = (RequestState("wide", 1024, 1024, remaining_steps=20, deadline_us=60_000_000),
            RequestState("urgent", 1024, 1024, remaining_steps=2, deadline_us=1_500_000))
    state = RoundState(now_us=0, round_us=3_000_000, cluster=make_cluster(2), profile=prof, degrees=(1, 2),
                       requests=reqs)
    plan = make_plan(state, [("wide", (0, 1), 4), ("urgent", (0,), 2)], backend="test")
    start = {a.request: a.start_us for a in plan.assignments}
    assert start["urgent"] < start["wide"], plan  # the premise: the plan runs urgent first
    return plan

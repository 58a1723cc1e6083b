"""API fuzzing with schemathesis against the server's own OpenAPI document (/openapi.json):
no generated input, valid or not, gets a 5xx. Examples are capped so the suite stays short.

(Hypothesis drives each operation's strategy directly: schemathesis' pytest fixture loader
does not work with pytest 9.)
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

pytestmark = pytest.mark.server
schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402

from serverkit import BASE, ServerThread  # noqa: E402

EXAMPLES = 15  # per operation and mode


def test_no_server_errors():
    # fuzzed jobs must not pile up: a tiny per-request work cap, a short TTL
    with ServerThread(replace(BASE, max_request_gpu_s=2.0, job_ttl_s=5)) as s:
        schema = schemathesis.openapi.from_url(s.url + "/openapi.json")
        ops = [r.ok() for r in schema.get_all_operations()]
        assert {(o.method.upper(), o.path) for o in ops} >= {("POST", "/v1/images/generations"),
                                                             ("POST", "/v1/jobs"), ("DELETE", "/v1/jobs/{job_id}")}
        calls = []
        for op, mode in [(o, m) for o in ops for m in schemathesis.GenerationMode]:  # valid and invalid inputs
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                calls.append(case.call_and_validate(checks=[not_a_server_error], timeout=30).status_code)

            try:
                run()
            except Unsatisfiable:  # no invalid input exists for an operation without parameters
                assert mode == schemathesis.GenerationMode.NEGATIVE
        assert len(calls) >= 100 and {c // 100 for c in calls} >= {2, 4}, sorted(set(calls))

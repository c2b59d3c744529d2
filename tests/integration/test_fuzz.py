"""Schema-driven fuzzing from the app's own OpenAPI spec (schemathesis) over real HTTP.

Thousands of generated requests, valid and invalid (wrong types, missing fields, odd
strings, huge numbers), against every operation: none may get a 5xx, and every error must
be a JSON body with an ``error`` code. ``RECSYS_FUZZ_CASES`` sets the number of cases per
operation and generation mode (default 1000: over 5,000 cases in all; operations without
parameters give only a few).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.conftest import ServeApp, app_config

pytestmark = pytest.mark.slow

CASES = int(os.environ.get("RECSYS_FUZZ_CASES", "1000"))


@pytest.fixture(scope="module")
def app(serve_instance: ServeApp, tiny_artifact: Path) -> ServeApp:
    serve_instance.deploy(app_config(tiny_artifact))
    return serve_instance


def test_fuzzed_requests_never_get_a_5xx_and_errors_are_json(app: ServeApp) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_url(f"{app.base}/openapi.json")
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in schemathesis.GenerationMode:

            @settings(
                max_examples=CASES,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def send(case: schemathesis.Case) -> None:
                response = case.call(base_url=app.base, timeout=30)
                statuses[response.status_code] += 1
                where = f"{case.method} {case.formatted_path} {case.body!r:.200}"
                if response.status_code >= 500:
                    problems.append(f"{response.status_code} for {where}: {response.text[:200]}")
                elif response.status_code >= 400:
                    try:
                        body = json.loads(response.text)
                    except ValueError:
                        body = None
                    if not isinstance(body, dict) or not body.get("error"):
                        problems.append(
                            f"non-JSON error {response.status_code} for {where}: "
                            f"{response.text[:200]}"
                        )

            try:
                send()
            except Unsatisfiable:  # nothing to generate (e.g. no invalid form of a bare GET)
                continue
    total = sum(statuses.values())
    print(f"fuzzed {total} requests: {dict(sorted(statuses.items()))}")
    assert not problems, f"{len(problems)} of {total} bad answers, e.g. {problems[:5]}"
    assert total >= min(5_000, CASES * 5), (total, dict(statuses))

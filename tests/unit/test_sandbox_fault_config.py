"""SANDBOX_FAULTS parsing and the fault injector's decisions (no servers)."""

from __future__ import annotations

import pytest

from sandbox.faults import FaultInjector, parse_faults

pytestmark = pytest.mark.unit


def test_empty_or_missing_means_no_faults() -> None:
    assert parse_faults(None) == {}
    assert parse_faults("  ") == {}
    assert not FaultInjector("safetyamp", None, 1).active


def test_valid_faults_are_normalised() -> None:
    parsed = parse_faults(
        '{"safetyamp": {"error_rate": 0.2, "rate_limit_per_minute": 60, "latency_ms": 100,'
        ' "reset_rate": 0.05, "throttle_rate": 0.1, "lost_response_rate": 0}, "graph": {}}'
    )
    assert parsed["safetyamp"]["rate_limit_per_minute"] == 60.0
    assert parsed["graph"] == {}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"salesforce": {}}', "unknown service 'salesforce'"),
        ('{"samsara": {"eror_rate": 0.1}}', "unknown key"),
        ('{"samsara": {"error_rate": 1.5}}', "<= 1"),
        ('{"samsara": {"latency_ms": -1}}', ">= 0"),
        ('{"samsara": {"latency_ms": "100"}}', "must be a number"),
        ('{"samsara": {"reset_rate": true}}', "must be a number"),
        ('{"samsara": {"rate_limit_per_minute": 0}}', "> 0"),
        ('{"samsara": 5}', "must be an object"),
    ],
)
def test_bad_faults_name_the_problem(raw: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_faults(raw)


def test_token_bucket_refuses_with_time_until_next_token() -> None:
    injector = FaultInjector("samsara", {"rate_limit_per_minute": 60, "burst": 2}, 1, fractional_retry_after=True)
    assert injector.take_token() is None
    assert injector.take_token() is None
    wait = injector.take_token()
    assert wait is not None and 0 < wait <= 1.0
    assert injector.format_retry_after(0.40235) == "0.40235"
    integer = FaultInjector("graph", {"rate_limit_per_minute": 60}, 1)
    assert integer.format_retry_after(0.2) == "1" and integer.format_retry_after(2.1) == "3"


def test_decisions_repeat_with_the_seed() -> None:
    settings = {"error_rate": 0.3, "throttle_rate": 0.2, "reset_rate": 0.1}

    def decisions(seed: int) -> list[object]:
        injector = FaultInjector("safetyamp", settings, seed)
        return [injector.check() for _ in range(50)]

    assert decisions(7) == decisions(7)
    assert decisions(7) != decisions(8)
    kinds = {d[0] for d in decisions(7) if d is not None}
    assert kinds == {"error", "throttled", "reset"}


def test_latency_spikes_are_ten_times_the_base() -> None:
    injector = FaultInjector("graph", {"latency_ms": 10}, 3)
    delays = {injector.latency() for _ in range(400)}
    assert delays == {0.01, 0.1}

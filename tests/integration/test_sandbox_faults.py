"""Fault injection seen from a real client: dropped connections, lost responses, 5xx, latency."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from sandbox.server import start_sandbox
from sandbox.store import open_store
from sandbox.testing import safetyamp_headers, samsara_headers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One seeded directory; each test starts its own sandbox on it with its own faults."""
    directory = tmp_path_factory.mktemp("faults")
    start_sandbox(directory, size=10, faults={}, seed=404).stop()
    return directory


def _post_title(url: str, headers: dict[str, str], name: str) -> requests.Response:
    return requests.post(url + "/api/user_titles", headers=headers, json={"name": name}, timeout=10)


def test_lost_response_commits_the_write_but_the_client_sees_a_dropped_connection(seeded: Path) -> None:
    with start_sandbox(seeded, faults={"safetyamp": {"lost_response_rate": 1.0}}, seed=1) as sb:
        url, headers = sb.endpoints["safetyamp"]["url"], safetyamp_headers(sb.endpoints)
        mark = open_store(seeded)
        since = mark.last_request_id()
        with pytest.raises(requests.ConnectionError):
            _post_title(url, headers, "Lost Response Title")
        reads = requests.get(url + "/api/user_titles?name=Lost Response Title", headers=headers, timeout=10)
        assert [t["name"] for t in reads.json()["data"]] == ["Lost Response Title"]  # reads are untouched
        log = mark.requests("safetyamp", since_id=since)
        mark.close()
    assert [(r["method"], r["status"]) for r in log] == [("POST", 0), ("GET", 200)]


def test_reset_drops_the_connection_before_anything_is_written(seeded: Path) -> None:
    with start_sandbox(seeded, faults={"safetyamp": {"reset_rate": 1.0}}, seed=1) as sb:
        with pytest.raises(requests.ConnectionError):
            _post_title(sb.endpoints["safetyamp"]["url"], safetyamp_headers(sb.endpoints), "Reset Title")
    with open_store(seeded) as st:
        assert "Reset Title" not in {t["name"] for t in st.all("safetyamp", "user_titles")}
        assert st.requests("safetyamp")[-1]["status"] == 0
        assert st.request_counts()["safetyamp"]["POST"] >= 1  # counted server-side although dropped


def test_error_rate_gives_vendor_shaped_5xx_including_gateway_html(seeded: Path) -> None:
    with start_sandbox(seeded, faults={"safetyamp": {"error_rate": 1.0}}, seed=5) as sb:
        url, headers = sb.endpoints["safetyamp"]["url"], safetyamp_headers(sb.endpoints)
        responses = [requests.get(url + "/api/roles", headers=headers, timeout=10) for _ in range(12)]
    assert {r.status_code for r in responses} == {500, 502, 503}
    for r in responses:
        if r.status_code == 502:
            assert r.headers["Content-Type"].startswith("text/html") and "Bad Gateway" in r.text
        else:
            assert "message" in r.json()


def test_same_seed_same_faults(seeded: Path, tmp_path: Path) -> None:
    """SANDBOX_SEED makes a sequence of runs repeatable; consecutive runs differ."""
    import shutil

    def run(folder: Path) -> list[int]:
        with start_sandbox(folder, faults={"samsara": {"error_rate": 0.3, "throttle_rate": 0.3}}, seed=77) as sb:
            url = sb.endpoints["samsara"]["url"] + "/fleet/vehicles"
            return [requests.get(url, headers=samsara_headers(sb.endpoints), timeout=10).status_code for _ in range(15)]

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(seeded, a)
    shutil.copytree(seeded, b)
    first_a, first_b = run(a), run(b)
    assert first_a == first_b
    assert {200, 429} <= set(first_a)
    assert run(a) == run(b) != first_a  # the second start meets other faults, the same in both copies


def test_latency_is_added(seeded: Path) -> None:
    with start_sandbox(seeded, faults={"samsara": {"latency_ms": 60}}, seed=2) as sb:
        url = sb.endpoints["samsara"]["url"] + "/fleet/vehicles"
        started = time.monotonic()
        requests.get(url, headers=samsara_headers(sb.endpoints), timeout=10)
        assert time.monotonic() - started >= 0.06


def test_rate_limit_counts_arrivals_before_the_latency(seeded: Path) -> None:
    """A 429 from the limit is immediate; the latency is the server's time to answer a
    request it accepted. Two requests sent together to a one-per-second limit: the first
    is answered after the latency, the second refused at once (not after waiting it out)."""
    with start_sandbox(seeded, faults={"samsara": {"rate_limit_per_minute": 60, "latency_ms": 400}}, seed=3) as sb:
        url = sb.endpoints["samsara"]["url"] + "/fleet/vehicles"
        headers = samsara_headers(sb.endpoints)
        from concurrent.futures import ThreadPoolExecutor

        def timed() -> tuple[int, float]:
            started = time.monotonic()
            r = requests.get(url, headers=headers, timeout=30)
            return r.status_code, time.monotonic() - started

        with ThreadPoolExecutor(2) as pool:
            results = sorted(pool.map(lambda _: timed(), range(2)))
        (ok, ok_s), (refused, refused_s) = results
        assert (ok, refused) == (200, 429)
        assert ok_s >= 0.4  # 400 ms, or 4 s for the 5 % spikes
        assert refused_s < 0.3, "a request refused by the limit must not wait for the latency first"


def test_environment_faults_are_read_when_none_are_given(seeded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_FAULTS", '{"samsara": {"throttle_rate": 1.0}}')
    with start_sandbox(seeded) as sb:
        response = requests.get(
            sb.endpoints["samsara"]["url"] + "/fleet/vehicles", headers=samsara_headers(sb.endpoints), timeout=10
        )
    assert response.status_code == 429
    monkeypatch.setenv("SANDBOX_FAULTS", '{"samsara": {"throttle_rate": 2}}')
    with pytest.raises(ValueError, match="throttle_rate"):
        start_sandbox(seeded)

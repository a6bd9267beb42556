"""utils.scrub: the one scrub every output surface uses (URL credentials above all)."""

from __future__ import annotations

import pytest

from utils.scrub import MASK, Redactor, is_secret_param, scrub, scrub_value, url_secrets

pytestmark = pytest.mark.unit

SENTINEL = "S3NT1NEL-url-4f9a"


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "apikey",
        "API_KEY",
        "api-key",
        "api%5Fkey",
        "key",
        "Key",
        "token",
        "access_token",
        "refresh_token",
        "$skiptoken",
        "secret",
        "client_secret",
        "password",
        "pwd",
        "sig",
        "signature",
        "X-Amz-Signature",
        "code",
        "client_assertion",
        "auth",
        "sessionid",
    ],
)
def test_secret_query_parameters_are_masked_in_urls_and_bare_query_strings(name: str) -> None:
    assert is_secret_param(name)
    for text in (
        f"GET https://api.example.test/v1/users?page=2&{name}={SENTINEL}&limit=25 failed",
        f"Max retries exceeded with url: /v1/users?{name}={SENTINEL} (Caused by ...)",
        f'{{"reason": "https://h/x?{name}={SENTINEL}#frag"}}',
    ):
        out = Redactor().text(text)
        assert SENTINEL not in out, out
        assert f"{name}={MASK}" in out, out
    assert Redactor().text(f"https://h/v1?page=2&{name}={SENTINEL}&limit=25") == f"https://h/v1?page=2&{name}={MASK}&limit=25"


@pytest.mark.parametrize("name", ["page", "limit", "zipcode", "keyword", "filter", "fields", "hash_algorithm", "keys"])
def test_ordinary_query_parameters_stay_readable(name: str) -> None:
    assert not is_secret_param(name)
    text = f"https://api.example.test/v1/users?{name}=value-1234&x=1"
    assert Redactor().text(text) == text


def test_a_logs_key_field_is_not_a_query_parameter() -> None:
    line = "2026-11-28T01:02:03Z WARNING sync=employees key=1234 code=E42 record refused"
    assert Redactor().text(line) == line


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"https://{SENTINEL}@api.example.test/v1", f"https://{MASK}@api.example.test/v1"),
        (f"https://user:{SENTINEL}@api.example.test/v1", f"https://user:{MASK}@api.example.test/v1"),
        (f"redis://:{SENTINEL}@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
        (f"postgresql+psycopg://svc:{SENTINEL}@db/x?sslmode=require", f"postgresql+psycopg://svc:{MASK}@db/x?sslmode=require"),
        ("see https://example.test/a@b and mail bob@example.test", "see https://example.test/a@b and mail bob@example.test"),
    ],
)
def test_url_userinfo_is_masked(raw: str, expected: str) -> None:
    assert Redactor().text(raw) == expected


@pytest.mark.parametrize(
    ("url", "found"),
    [
        (f"https://h/api?api_key={SENTINEL}&v=2", [SENTINEL]),
        ("https://h/api?api_key=S3NT%2B1NEL-x&v=2", ["S3NT%2B1NEL-x", "S3NT+1NEL-x"]),
        (f"https://{SENTINEL}@h/api", [SENTINEL]),
        (f"https://svc:{SENTINEL}@h/api", [SENTINEL]),
        ("https://h/api?version=2024-01-01", []),
        ("not a url", []),
        ("https://[::1/x", []),  # malformed: no crash, the shapes still apply
    ],
)
def test_url_secrets_finds_the_credentials_of_a_url(url: str, found: list[str]) -> None:
    assert sorted(set(url_secrets(url))) == sorted(found)


def test_settings_register_the_credentials_inside_url_settings() -> None:
    from config.settings import load_settings

    settings = load_settings(
        {
            # base URLs take no query string (refused at start); these two can
            "ONEROSTER_TOKEN_URL": f"https://sis.example.test/oauth/token?api_key={SENTINEL}-sa",
            "SAMSARA_URL": f"https://{SENTINEL}-sam@samsara.example.test",
            "PUSHGATEWAY_URL": f"https://push.example.test/?token={SENTINEL}-scim",
            "REDIS_URL": f"redis://:{SENTINEL}-redis@cache:6379/0",
        },
        dotenv_path=None,
    )
    values = settings.secret_values()
    for suffix in ("-sa", "-sam", "-scim", "-redis"):
        assert SENTINEL + suffix in values
    # masked even where the value appears without its URL
    redactor = Redactor(values)
    assert SENTINEL not in redactor.text(f"requests said: /api/users?x={SENTINEL}-sa and user {SENTINEL}-sam")


def test_scrub_with_extra_values_and_structures() -> None:
    assert scrub(f"token {SENTINEL}-extra here", [f"{SENTINEL}-extra"]) == f"token {MASK} here"
    assert scrub("x", ["", "x"]) == "x"  # too short to mask safely
    value = scrub_value({"runs": [{"error": f"GET https://h/?key={SENTINEL}"}], "password": "p4ssw0rd!", "n": 3})
    assert value == {"runs": [{"error": f"GET https://h/?key={MASK}"}], "password": MASK, "n": 3}


def test_every_daemon_response_body_passes_the_scrub() -> None:
    """Whatever fills a body (a reason an older version stored in Redis, an exception
    message), the daemon's app masks it on the way out."""
    from main import Daemon, create_app

    daemon = Daemon(None, ())
    daemon.state.starting = False
    daemon.state.config_error = [f"SAFETYAMP_URL https://{SENTINEL}-u@sa.test is unreachable"]
    daemon.state.last_runs = {"vehicles": {"status": "failed", "error": f"GET https://h/v1?api_key={SENTINEL}-q: refused"}}
    client = create_app(daemon).test_client()
    health = client.get("/health")
    ready = client.get("/ready")
    assert health.status_code == 503 and ready.status_code == 503  # configuration_error
    for resp in (health, ready):
        assert SENTINEL not in resp.get_data(as_text=True)
    assert health.get_json()["last_runs"]["vehicles"]["error"].startswith(f"GET https://h/v1?api_key={MASK}")
    assert f"https://{MASK}@sa.test" in ready.get_json()["reason"]


def test_the_failed_record_trackers_stored_reason_is_scrubbed() -> None:
    from datetime import UTC, datetime

    from utils.failed_sync_tracker import DEFAULT_SCHEDULE, failed_entry

    reason = f"safetyamp POST https://{SENTINEL}-u@sa.test/api/users?code={SENTINEL}-c: HTTP 422"
    entry = failed_entry(
        None, fingerprint="f", reason=reason, fields=[], now=datetime(2026, 11, 28, tzinfo=UTC), schedule=DEFAULT_SCHEDULE
    )
    assert SENTINEL not in entry["reason"]
    assert entry["reason"].startswith("safetyamp POST https://***@sa.test/api/users?code=***")


def test_a_closing_bracket_after_a_masked_query_value_stays():
    assert scrub("(see https://x.test/?api_key=S3CRET)") == "(see https://x.test/?api_key=***)"
    assert scrub("[https://x.test/?token=S3CRET]") == "[https://x.test/?token=***]"
    assert "S3CRET" not in scrub("https://x.test/?token=S3CRET)x")  # a bracket inside the value: masked whole

"""The console's parts without a daemon: who may sign in, sessions, run files read a page
at a time, CSV cells, the chart, the CONSOLE_* settings."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from config.settings import load_settings
from console.auth import (
    MAX_SESSION_SECONDS,
    Authenticator,
    Identity,
    Refused,
    Revocations,
    from_networks,
    parse_networks,
    proxy_role,
)
from console.chart import runs_chart
from console.exports import CHANGE_COLUMNS, cell, change_rows, rows_to_csv
from console.runfiles import ListFile, RunFileError, run_file
from services.event_manager import EventManager, _write_atomic
from utils.errors import ConfigurationError

pytestmark = pytest.mark.unit

TOKEN = "console-token-0123456789abcdef-0123456789"


def settings(**env: str):
    return load_settings({"CONSOLE_TOKEN": TOKEN, **env}, dotenv_path=None)


# ---- settings ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONSOLE_TOKEN": "too-short"}, "CONSOLE_TOKEN (secret, not shown): too short"),
        ({"CONSOLE_TOKEN": "x" * 31 + " y"}, "printable ASCII without spaces"),
        ({"CONSOLE_TRUSTED_PROXY": "proxy.local"}, "is not an IP address or network"),
        ({"CONSOLE_TRUSTED_PROXY": "0.0.0.0/0"}, "trusts every address"),
        ({"CONSOLE_TRUSTED_PROXY": "::/0"}, "trusts every address"),
        ({"CONSOLE_OPERATOR_GROUPS": "ops"}, "set CONSOLE_TRUSTED_PROXY too"),
        ({"CONSOLE_VIEWER_GROUPS": "ops"}, "set CONSOLE_TRUSTED_PROXY too"),
        ({"CONSOLE_SESSION_IDLE_MINUTES": "0"}, "CONSOLE_SESSION_IDLE_MINUTES='0'"),
        ({"CONSOLE_SESSION_IDLE_MINUTES": "nan"}, "CONSOLE_SESSION_IDLE_MINUTES"),
    ],
)
def test_console_settings_refuse_bad_values_with_a_clear_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env, dotenv_path=None)
    assert message in str(caught.value)
    assert "too-short" not in str(caught.value)


def test_console_settings_parse_lists_and_networks() -> None:
    s = load_settings(
        {
            "CONSOLE_TRUSTED_PROXY": "127.0.0.1, 10.2.0.0/16 ,::1",
            "CONSOLE_OPERATOR_GROUPS": "Sync Operators, 6f1c2a3b-0000-4000-8000-000000000001",
            "CONSOLE_VIEWER_GROUPS": "IT",
        },
        dotenv_path=None,
    )
    assert s.console_trusted_proxy == ("127.0.0.1/32", "10.2.0.0/16", "::1/128")
    assert s.console_operator_groups == ("Sync Operators", "6f1c2a3b-0000-4000-8000-000000000001")
    assert s.console_token is None and s.console_session_idle_minutes == 30
    assert TOKEN in settings().secret_values()


# ---- who may do what -----------------------------------------------------------------------
def test_groups_map_to_roles_case_insensitively() -> None:
    ops, viewers = ["Sync-Operators", "6F1C2A3B-AAAA"], ["IT"]
    assert proxy_role(["sync-operators"], ops, viewers) == "operator"
    assert proxy_role(["x", "6f1c2a3b-aaaa"], ops, viewers) == "operator"
    assert proxy_role(["it"], ops, viewers) == "viewer"
    with pytest.raises(Refused):
        proxy_role(["sales"], ops, viewers)
    assert proxy_role(["sales"], ops, []) == "viewer"  # no viewer groups: whoever the proxy lets in may look
    assert proxy_role([], [], []) == "viewer"


def test_proxy_sources_are_checked_by_network_ipv4_mapped_included() -> None:
    nets = parse_networks(["127.0.0.1/32", "10.2.0.0/16"])
    assert from_networks("127.0.0.1", nets)
    assert from_networks("::ffff:10.2.3.4", nets)
    assert not from_networks("10.3.0.1", nets)
    assert not from_networks("127.0.0.2", nets)
    assert not from_networks("not-an-ip", nets)
    assert not from_networks(None, nets)
    assert not from_networks("127.0.0.1", ())


def test_proxy_headers_count_only_from_a_trusted_source() -> None:
    auth = Authenticator(settings(CONSOLE_TRUSTED_PROXY="127.0.0.1", CONSOLE_OPERATOR_GROUPS="ops"))
    headers = {"X-Forwarded-User": "pat", "X-Forwarded-Email": "pat@example.com", "X-Forwarded-Groups": "it,ops"}
    assert auth.proxy_identity("192.0.2.7", headers) is None
    who = auth.proxy_identity("127.0.0.1", headers)
    assert who == Identity("pat@example.com", "operator", "proxy", "pat@example.com", ("it", "ops"))
    assert auth.proxy_identity("127.0.0.1", {"X-Forwarded-Groups": "ops"}) is None  # nobody named


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_sessions_end_when_idle_or_too_old_or_signed_out_and_survive_a_replica_change() -> None:
    clock = Clock()
    auth = Authenticator(settings(CONSOLE_SESSION_IDLE_MINUTES="30"), revocations=Revocations(None, "p:", clock), clock=clock)
    session = auth.new_session(Identity("10.0.0.1", "operator", "token"))
    cookie = auth.dump(session)
    other_replica = Authenticator(settings(), clock=clock)
    assert other_replica.load(cookie)[0] == session  # the key comes from the token: every replica agrees

    clock.now += 29 * 60
    assert auth.load(cookie)[0] == session
    cookie = auth.dump(auth.touched(session))
    clock.now += 29 * 60
    assert auth.load(cookie)[0] is not None
    clock.now += 2 * 60
    loaded, why = auth.load(cookie)
    assert loaded is None and "30 minutes without activity" in (auth.why_text(why) or "")

    young = auth.new_session(Identity("10.0.0.1", "operator", "token"))
    old = auth.dump(young.__class__(young.sid, clock.now - MAX_SESSION_SECONDS - 1, clock.now, young.identity))
    assert auth.load(old)[0] is None

    fresh = auth.new_session(Identity("10.0.0.1", "operator", "token"))
    auth.revoke(fresh)
    assert auth.load(auth.dump(fresh)) == (None, "signed-out")
    assert auth.why_text("signed-out") == "You signed out. Sign in again."

    assert auth.load(cookie[:-3] + "abc")[0] is None  # tampered
    assert (
        Authenticator(settings(CONSOLE_TOKEN="another-token-0123456789abcdef-0123456"), clock=clock).load(auth.dump(fresh))[0]
        is None
    )


def test_csrf_tokens_belong_to_one_session() -> None:
    auth = Authenticator(settings())
    a, b = auth.new_session(None), auth.new_session(None)
    assert auth.csrf_ok(a, auth.csrf_token(a))
    assert not auth.csrf_ok(a, auth.csrf_token(b))
    assert not auth.csrf_ok(a, "")
    assert not auth.csrf_ok(None, auth.csrf_token(a))


def test_wrong_passwords_are_throttled_per_client() -> None:
    clock = Clock()
    auth = Authenticator(settings(), clock=clock)
    for _ in range(10):
        assert not auth.check_token("192.0.2.1", "guess")
    assert auth.throttled("192.0.2.1")
    assert not auth.throttled("192.0.2.2")
    assert auth.check_token("192.0.2.2", TOKEN)
    clock.now += 301
    assert not auth.throttled("192.0.2.1")


def test_without_a_token_the_session_key_is_shared_through_redis() -> None:
    s = load_settings({"CONSOLE_TRUSTED_PROXY": "127.0.0.1"}, dotenv_path=None)
    store: dict[str, str] = {}

    class TinyRedis:  # the two commands the key needs (SET NX, GET), on a dict
        def set(self, name: str, value: str, nx: bool = False) -> None:
            if not (nx and name in store):
                store[name] = value

        def get(self, name: str) -> str | None:
            return store.get(name)

    from console.auth import shared_key_from_redis

    one = Authenticator(s, shared_key=shared_key_from_redis(TinyRedis(), "p:"))
    two = Authenticator(s, shared_key=shared_key_from_redis(TinyRedis(), "p:"))
    assert one.key() == two.key() and len(one.key()) == 32

    def down() -> bytes:
        raise ConnectionError("Redis is down")

    alone = Authenticator(s, shared_key=down)
    assert len(alone.key()) == 32 and alone.key() != one.key()


# ---- run files, a page at a time -----------------------------------------------------------
def write_changes(folder: Path, name: str, count: int, *, key_width: int = 6) -> Path:
    """A changes file exactly as services.event_manager writes it (its own writer)."""
    path = folder / "changes" / name
    path.parent.mkdir(parents=True, exist_ok=True)

    def items():
        for i in range(count):
            yield {
                "key": str(i).zfill(key_width),
                "action": "updated",
                "at": "2026-01-01T00:00:00.000Z",
                "fields": {
                    "email": {"before": f"old{i}@example.com", "after": f"new{i}@example.com"},
                    "nested": {"before": {"a": [1]}, "after": None},
                },
            }

    head = {"run_id": "r1", "sync": "employees", "status": "success", "started_at": "2026-01-01T00:00:00.000Z",
            "finished_at": "2026-01-01T00:10:00.000Z", "dry_run": False, "counts": {"updated": count},
            "errors_file": None, "unconfirmed": [{"seq": 1, "key": "x", "action": "created", "target": "users", "at": "t"}]}  # fmt: skip
    _write_atomic(path, head, tail=("changes", items()))
    return path


def test_pages_forward_and_back_cover_every_change_once(tmp_path: Path) -> None:
    path = write_changes(tmp_path, "employees-20260101T000000Z.json", 237)
    reader = ListFile(path, "changes")
    page = reader.page(size=50)
    assert page.first and page.prev_offset is None and page.head["counts"] == {"updated": 237}
    seen = [c["key"] for c in page.items]
    offsets = [page.offset]
    while page.next_offset is not None:
        page = reader.page(offset=page.next_offset, size=50)
        offsets.append(page.offset)
        seen += [c["key"] for c in page.items]
    assert seen == [str(i).zfill(6) for i in range(237)]
    back = []
    while page.prev_offset is not None:
        expected = offsets[offsets.index(page.offset) - 1]
        page = reader.page(offset=page.prev_offset, size=50)
        assert page.offset == expected
        back = [c["key"] for c in page.items] + back
    assert page.first and back == seen[: len(back)] and len(back) == 200
    assert [c["key"] for c in reader.page(before=offsets[2], size=50).items] == seen[50:100]
    assert sum(1 for _ in reader.iter_items()) == 237


@pytest.mark.parametrize("bad", [0, 1, 5, 10_000_000])
def test_an_offset_that_is_not_an_item_start_is_refused(tmp_path: Path, bad: int) -> None:
    reader = ListFile(write_changes(tmp_path, "jobs-20260101T000000Z.json", 60), "changes")
    first = reader.page(size=1)
    with pytest.raises(RunFileError):
        reader.page(offset=first.next_offset + bad if bad else first.offset - 1, size=10)  # type: ignore[operator]


def test_files_written_by_the_event_manager_read_back_with_errors_and_empty_lists(tmp_path: Path) -> None:
    events = EventManager(tmp_path, "run-1")
    log = events.start("vehicles")
    log.change("v1", "created", after={"name": "Truck 1", "serial": "G1"})
    log.error("v2", "no driver", payload={"name": "Truck 2"}, fields=["driver"])
    files = log.finish({"created": 1, "failed": 1}, "partial")
    changes = ListFile(files.changes, "changes").page()
    assert [c["key"] for c in changes.items] == ["v1"] and changes.next_offset is None
    assert changes.head["errors_file"] == files.errors.name  # type: ignore[union-attr]
    errors = ListFile(files.errors, "errors").page()  # type: ignore[arg-type]
    assert errors.items[0]["reason"] == "no driver"
    quiet = EventManager(tmp_path, "run-2").start("titles")
    empty = ListFile(quiet.finish({}, "success").changes, "changes").page()
    assert empty.items == [] and empty.next_offset is None and empty.first


def test_only_run_file_names_are_opened(tmp_path: Path) -> None:
    assert run_file(tmp_path, "employees-20260101T000000Z.json") == tmp_path / "employees-20260101T000000Z.json"
    assert run_file(tmp_path, "employees-20260101T000000Z-3.json") is not None
    for bad in ("../../etc/passwd", "employees.json", "x-20260101T000000Z.jsonl", "", None, ".employees-20260101T000000Z.json"):
        assert run_file(tmp_path, bad) is None, bad
    assert run_file(tmp_path, "/elsewhere/employees-20260101T000000Z.json") == tmp_path / "employees-20260101T000000Z.json"
    with pytest.raises(RunFileError, match="no longer on disk"):
        ListFile(tmp_path / "employees-20260101T000000Z.json", "changes").page()
    (tmp_path / "jobs-20260101T000000Z.json").write_text('{"not": "a run file"}')
    with pytest.raises(RunFileError, match="not a run file"):
        ListFile(tmp_path / "jobs-20260101T000000Z.json", "changes").page()


def fast_changes(folder: Path, name: str, count: int) -> Path:
    """The same bytes as write_changes (checked below), written at disk speed: 200,000
    json.dumps calls would make this test slow for no gain."""
    small = write_changes(folder / "reference", name, 2)
    text = small.read_text(encoding="utf-8")
    head, rest = text.split('"changes": [\n', 1)
    head += '"changes": ['
    template = rest.split("\n    },", 1)[0] + "\n    }"
    path = folder / "changes" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.write(head.replace('"updated": 2', f'"updated": {count}') + "\n")
        for i in range(count):
            item = template.replace('"000000"', f'"{i:06d}"').replace("old0@", f"old{i}@").replace("new0@", f"new{i}@")
            out.write(item + (",\n" if i < count - 1 else "\n  ]\n}\n"))
    return path


def test_the_fast_writer_matches_the_event_manager_layout(tmp_path: Path) -> None:
    assert (
        fast_changes(tmp_path / "a", "x-20260101T000000Z.json", 7).read_bytes()
        == write_changes(tmp_path / "b", "x-20260101T000000Z.json", 7).read_bytes()
    )


def test_a_page_of_a_200k_change_log_reads_only_what_it_shows(tmp_path: Path) -> None:
    path = fast_changes(tmp_path, "employees-20260101T000000Z.json", 200_000)
    size = path.stat().st_size
    assert size > 40_000_000
    reader = ListFile(path, "changes")
    first = reader.page(size=50)
    assert first.bytes_read < 300_000, first.bytes_read
    # deep in the file: a page found by its offset, and the page before it
    middle = reader.page(offset=first.next_offset, size=50)
    for _ in range(3):
        middle = reader.page(offset=middle.next_offset, size=50)
    assert [c["key"] for c in middle.items][:1] == ["000200"]
    assert middle.bytes_read < 400_000, middle.bytes_read
    last_offset = _offset_of_key(path, "199950")
    last = reader.page(offset=last_offset, size=50)
    assert last.items[-1]["key"] == "199999" and last.next_offset is None
    assert last.bytes_read < 400_000, last.bytes_read
    assert reader.page(offset=last.prev_offset, size=50).items[0]["key"] == "199900"  # type: ignore[arg-type]


def _offset_of_key(path: Path, key: str) -> int:
    """Where the item with ``key`` starts (found by the test, not the pager)."""
    needle = b'\n    {\n      "key": "' + key.encode() + b'"'
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 2_000_000))
        tail_start = handle.tell()
        data = handle.read()
    return tail_start + data.index(needle) + 1


# ---- CSV and chart -----------------------------------------------------------------------
def test_csv_cells_are_scrubbed_and_never_formulas() -> None:
    assert cell('=HYPERLINK("http://evil")') == '\'=HYPERLINK("http://evil")'
    assert cell("+1 555") == "'+1 555" and cell("-3") == "'-3" and cell("@sum") == "'@sum"
    assert cell("Authorization: Bearer abc.def.ghi") == "Authorization: ***"
    assert cell({"password": "hunter22"}) == '{"password": "***"}'
    assert cell(None) == "" and cell(True) == "true" and cell(12) == "12"


def test_change_rows_are_one_per_field_and_the_csv_parses() -> None:
    changes = [
        {"key": "1001", "action": "updated", "fields": {"email": {"before": "a@x.com", "after": "b@x.com"}}, "at": "t"},
        {"key": "1002", "action": "created", "after": {"first_name": "Ana", "last_name": "=cmd|' /C calc'!A0"}},
        {"key": "1003", "action": "deactivated"},
    ]
    text = "".join(rows_to_csv(CHANGE_COLUMNS, change_rows(changes)))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(CHANGE_COLUMNS)
    assert rows[1][:5] == ["1001", "updated", "email", "a@x.com", "b@x.com"]
    assert rows[3][:5] == ["1002", "created", "last_name", "", "'=cmd|' /C calc'!A0"]
    assert rows[4][:3] == ["1003", "deactivated", ""]


def test_the_chart_escapes_what_it_draws_and_has_a_text_alternative() -> None:
    runs = [
        {"status": "<script>alert(1)</script>", "duration_seconds": 12.5, "counts": {"created": 3}, "started_at": "<b>"},
        {"status": "success", "duration_seconds": "nan", "counts": {"updated": -4, "failed": 2}, "started_at": "2026-01-01"},
    ]
    svg = str(runs_chart(runs, title="jobs <runs>"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<b>" not in svg
    assert 'role="img"' in svg and '<title id="runs-chart-title">jobs &lt;runs&gt;</title>' in svg
    assert "style=" not in svg  # the CSP allows no inline style
    assert str(runs_chart([], title="x")) == ""


def test_exported_rows_come_from_the_file_one_at_a_time(tmp_path: Path) -> None:
    path = write_changes(tmp_path, "employees-20260101T000000Z.json", 3)
    text = "".join(rows_to_csv(CHANGE_COLUMNS, change_rows(ListFile(path, "changes").iter_items())))
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 1 + 3 * 2 and rows[2][2] == "nested" and json.loads(rows[2][3]) == {"a": [1]}


def test_identity_names_the_actor_for_the_audit_log() -> None:
    assert Identity("10.0.0.1", "operator", "token").actor == "console-token:10.0.0.1"
    assert Identity("pat@example.com", "viewer", "proxy").actor == "pat@example.com"

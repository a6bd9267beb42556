"""services.event_manager: change/error files, names, atomic writes, scrubbing."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.event_manager import MAX_BODY_CHARS, EventManager, _write_atomic
from tests.support.disk import small_tmpfs
from utils.errors import ChangeLogError
from utils.scrub import MASK, add_secrets

pytestmark = pytest.mark.unit

START = datetime(2026, 11, 22, 1, 2, 3, 250000, tzinfo=UTC)
TOKEN = "evt-sa-token-5e8f0a1b"


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1) -> None:
        self.now += timedelta(seconds=seconds)


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events(tmp_path: Path, clock: Clock) -> EventManager:
    return EventManager(tmp_path / "out", "run-1", clock=clock, secrets=[TOKEN])


def test_a_run_writes_changes_file_with_field_level_diffs(events: EventManager, clock: Clock, tmp_path: Path) -> None:
    log = events.start("employees")
    log.change(
        101,
        "updated",
        fields={"mobile_phone": {"before": None, "after": "+15045550101"}},
    )
    log.change(102, "created", after={"emp_id": "102", "first_name": "Ann"})
    log.change(
        103,
        "updated",
        before={"emp_id": "103", "email": "a@x.com", "first_name": "Bo"},
        after={"emp_id": "103", "email": "b@x.com", "first_name": "Bo", "home_site_id": 7},
    )
    log.change(
        104,
        "deactivated",
        before={"emp_id": "104", "system_access": 1},
        fields={"system_access": {"before": 1, "after": 0}},
    )
    clock.tick(12.5)
    files = log.finish({"created": 1, "updated": 2, "deactivated": 1}, "success", {"duration_seconds": 12.5})

    out = tmp_path / "out"
    assert files.changes == out / "changes" / "employees-20261122T010203Z.json"
    assert files.errors is None
    assert not (out / "errors").exists() or list((out / "errors").iterdir()) == []
    doc = read(files.changes)
    assert {k: doc[k] for k in ("run_id", "sync", "status", "started_at", "finished_at", "dry_run", "counts")} == {
        "run_id": "run-1",
        "sync": "employees",
        "status": "success",
        "started_at": "2026-11-22T01:02:03.250Z",
        "finished_at": "2026-11-22T01:02:15.750Z",
        "dry_run": False,
        "counts": {"created": 1, "updated": 2, "deactivated": 1},
    }
    assert doc["duration_seconds"] == 12.5
    assert doc["errors_file"] is None
    assert list(doc)[-1] == "changes"
    assert [(c["key"], c["action"]) for c in doc["changes"]] == [
        (101, "updated"),
        (102, "created"),
        (103, "updated"),
        (104, "deactivated"),
    ]
    assert doc["changes"][0]["fields"] == {"mobile_phone": {"before": None, "after": "+15045550101"}}
    assert doc["changes"][1]["after"] == {"emp_id": "102", "first_name": "Ann"}
    # fields computed from before/after when not given
    assert doc["changes"][2]["fields"] == {
        "email": {"before": "a@x.com", "after": "b@x.com"},
        "home_site_id": {"before": None, "after": 7},
    }
    assert doc["changes"][3]["fields"] == {"system_access": {"before": 1, "after": 0}}


def test_errors_file_is_written_only_when_there_are_errors(events: EventManager, tmp_path: Path) -> None:
    log = events.start("employees")
    log.error(
        7,
        "The email has already been taken.",
        target_body={
            "message": "The email has already been taken.",
            "errors": {"email": ["The email has already been taken."]},
        },
        payload={"emp_id": "7", "email": "dup@x.com", "first_name": "Al"},
        fields={"email": ["The email has already been taken."]},
    )
    log.error(8, "email 'n/a' has no @", fields=["email"], kind="rejected")
    log.error(9, "timeout after create; re-check found nothing", kind="failed")
    log.error(10, "phone 'n/a' ...; mobile_phone left out", fields=["mobile_phone"], kind="field_dropped")
    files = log.finish({"failed": 3}, "partial")
    assert files.errors == tmp_path / "out" / "errors" / "employees-20261122T010203Z.json"
    doc = read(files.errors)
    assert doc["run_id"] == "run-1" and doc["sync"] == "employees"
    first, second, third, fourth = doc["errors"]
    assert first["key"] == 7 and first["kind"] == "rejected"
    assert first["target_body"]["errors"] == {"email": ["The email has already been taken."]}
    assert first["payload"] == {"emp_id": "7", "email": "dup@x.com", "first_name": "Al"}
    assert first["fields"] == {"email": ["The email has already been taken."]}
    assert second["fields"] == ["email"]
    assert third["kind"] == "failed" and "payload" not in third
    assert fourth["kind"] == "field_dropped"
    assert read(files.changes)["errors_file"] == "employees-20261122T010203Z.json"


def test_payloads_and_bodies_are_scrubbed(events: EventManager) -> None:
    add_secrets(["evt-global-secret-99"])  # registered process-wide, e.g. a token learnt mid-run
    log = events.start("employees")
    log.error(
        1,
        f"401 with token {TOKEN}",
        target_body=f"<html>Authorization: Bearer abc.def echoed {TOKEN} and evt-global-secret-99</html>",
        payload={
            "emp_id": "1",
            "email": "a@x.com",
            "password": "p",
            "api_key": "k",
            "date_of_birth": "1980-01-01",
            "ssn": "123-45-6789",
            "nested": {"Authorization": "Bearer abc", "note": f"uses {TOKEN}"},
        },
    )
    log.change(
        1,
        "created",
        after={"emp_id": "1", "date_of_birth": "1980-01-01", "SAFETYAMP_TOKEN": TOKEN},
        fields={"date_of_birth": {"before": None, "after": "1980-01-01"}, "first_name": {"before": None, "after": "A"}},
    )
    log_text = (events.output_dir / "logs" / f"{log.name}.jsonl").read_text(encoding="utf-8")
    files = log.finish({}, "partial", {"note": f"token {TOKEN}"})
    assert files.errors is not None
    for path, text in ((files.errors, None), (files.changes, None), ("the run's log", log_text)):
        text = text or Path(path).read_text(encoding="utf-8")
        for leaked in (TOKEN, "evt-global-secret-99", "abc.def", "123-45-6789", "1980-01-01"):
            assert leaked not in text, (str(path), leaked)
    error = read(files.errors)["errors"][0]
    assert error["reason"] == f"401 with token {MASK}"
    assert error["payload"] == {"emp_id": "1", "email": "a@x.com", "nested": {"note": f"uses {MASK}"}}
    assert error["target_body"] == f"<html>Authorization: {MASK} echoed {MASK} and {MASK}</html>"
    change = read(files.changes)["changes"][0]
    assert change["after"] == {"emp_id": "1"}
    assert change["fields"] == {"first_name": {"before": None, "after": "A"}}
    assert read(files.changes)["note"] == f"token {MASK}"


def test_two_runs_in_the_same_second_never_overwrite(tmp_path: Path, clock: Clock) -> None:
    first_manager = EventManager(tmp_path, "run-a", clock=clock)
    second_manager = EventManager(tmp_path, "run-b", clock=clock)  # as another process would
    one = first_manager.start("jobs")
    two = second_manager.start("jobs")
    three = first_manager.start("jobs")
    paths = [log.finish({}, "success").changes for log in (one, two, three)]
    assert [p.name for p in paths] == [
        "jobs-20261122T010203Z.json",
        "jobs-20261122T010203Z-2.json",
        "jobs-20261122T010203Z-3.json",
    ]
    assert [read(p)["run_id"] for p in paths] == ["run-a", "run-b", "run-a"]
    # other syncs and other seconds keep the plain name
    assert first_manager.start("titles").finish({}, "success").changes.name == "titles-20261122T010203Z.json"
    clock.tick()
    assert first_manager.start("jobs").finish({}, "success").changes.name == "jobs-20261122T010204Z.json"


def test_a_leftover_changes_file_is_not_overwritten_even_without_its_log(events: EventManager, tmp_path: Path) -> None:
    changes = tmp_path / "out" / "changes"
    changes.mkdir(parents=True)
    (changes / "vehicles-20261122T010203Z.json").write_text('{"old": true}', encoding="utf-8")
    files = events.start("vehicles").finish({}, "success")
    assert files.changes.name == "vehicles-20261122T010203Z-2.json"
    assert read(changes / "vehicles-20261122T010203Z.json") == {"old": True}


def test_jsonl_log_holds_evidence_before_finish(events: EventManager) -> None:
    log = events.start("employees")
    log.change(1, "created", after={"emp_id": "1"})
    log.error(2, "bad phone", fields=["mobile_phone"])
    path = events.output_dir / "logs" / f"{log.name}.jsonl"
    # a SIGKILL now would leave exactly this on disk
    rows = jsonl(path)
    assert [r["type"] for r in rows] == ["start", "change", "error"]
    assert rows[0]["run_id"] == "run-1" and rows[0]["sync"] == "employees"
    assert rows[1]["key"] == 1 and rows[2]["reason"] == "bad phone"
    assert not (events.output_dir / "changes" / f"{log.name}.json").exists()
    files = log.finish({"created": 1, "failed": 1}, "partial")
    # the changes and errors files now hold all of it: a finished run leaves no log behind
    assert files.log is None and not path.exists()
    assert [c["key"] for c in read(files.changes)["changes"]] == [1]
    assert files.errors is not None and read(files.errors)["errors"][0]["reason"] == "bad phone"


def test_folders_are_created_and_no_temp_files_remain(tmp_path: Path, clock: Clock) -> None:
    root = tmp_path / "deep" / "er" / "output"
    events = EventManager(root, "run-1", clock=clock)
    log = events.start("departments")
    log.error(1, "x")
    log.finish({}, "partial")
    for name in ("changes", "errors", "logs"):
        folder = root / name
        assert folder.is_dir()
        assert [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"] == []


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    _write_atomic(target, {"version": 1})

    class Unserialisable:
        def __str__(self) -> str:
            raise RuntimeError("cannot render")

    with pytest.raises(RuntimeError, match="cannot render"):
        _write_atomic(target, {"version": 2, "bad": Unserialisable()})
    assert read(target) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_dry_run_flag_from_manager_or_start(tmp_path: Path, clock: Clock) -> None:
    dry = EventManager(tmp_path, "run-1", clock=clock, dry_run=True)
    assert read(dry.start("jobs").finish({}, "success").changes)["dry_run"] is True
    assert read(dry.start("titles", dry_run=False).finish({}, "success").changes)["dry_run"] is False


def test_misuse_is_refused(events: EventManager) -> None:
    log = events.start("jobs")
    with pytest.raises(ValueError, match="kind"):
        log.error(1, "x", kind="")
    with pytest.raises(ValueError, match="standard fields"):
        log.finish({}, "success", {"status": "other"})
    log.finish({}, "success")
    with pytest.raises(RuntimeError, match="already finished"):
        log.finish({}, "success")
    with pytest.raises(RuntimeError, match="finished"):
        log.change(1, "created")
    for bad in ("", "../etc", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="invalid sync name"):
            events.start(bad)


def test_naive_clock_is_refused(tmp_path: Path) -> None:
    def naive() -> datetime:
        return datetime(2026, 11, 22, 1, 2, 3)  # naive: the mistake under test

    with pytest.raises(ValueError, match="timezone-aware"):
        EventManager(tmp_path, "run-1", clock=naive).start("jobs")


def test_with_block_finishes_a_crashed_run_as_failed(events: EventManager) -> None:
    log = events.start("vehicles")

    def crashing_run() -> None:
        with log:
            log.change("v1", "created", after={"name": "Truck 1"})
            raise RuntimeError("samsara went away")

    with pytest.raises(RuntimeError):
        crashing_run()
    assert log.finished
    doc = read(events.output_dir / "changes" / f"{log.name}.json")
    assert doc["status"] == "failed"
    assert doc["counts"] == {"created": 1}
    assert doc["failure"] == "RuntimeError: samsara went away"
    with events.start("titles") as ok:
        ok.finish({"unchanged": 3}, "success")
    assert read(events.output_dir / "changes" / f"{ok.name}.json")["status"] == "success"


def test_long_target_bodies_are_cut(events: EventManager) -> None:
    log = events.start("jobs")
    log.error(1, "502", target_body="<html>" + "x" * 20000, kind="failed")
    log.error(2, "bytes", target_body=b"plain \xff bytes", kind="failed")
    files = log.finish({}, "partial")
    assert files.errors is not None
    first, second = read(files.errors)["errors"]
    assert len(first["target_body"]) < MAX_BODY_CHARS + 100
    assert first["target_body"].endswith("more characters cut]")
    assert second["target_body"] == "plain \ufffd bytes"


def test_concurrent_workers_lose_nothing(events: EventManager) -> None:
    log = events.start("employees")

    def work(worker: int) -> None:
        for i in range(200):
            log.change(f"{worker}-{i}", "updated", fields={"first_name": {"before": "a", "after": "b"}})
            if i % 10 == 0:
                log.error(f"{worker}-{i}", "bad", kind="failed")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = jsonl(events.output_dir / "logs" / f"{log.name}.jsonl")  # every line intact
    assert len(rows) == 1 + 1600 + 160
    files = log.finish({"updated": 1600, "failed": 160}, "partial")
    assert files.errors is not None
    assert len(read(files.changes)["changes"]) == 1600
    assert len(read(files.errors)["errors"]) == 160


# ------------------------------------------------------------ write-ahead intents
def test_intent_is_on_disk_before_the_write_and_its_outcome_closes_it(events: EventManager) -> None:
    log = events.start("employees")
    path = events.output_dir / "logs" / f"{log.name}.jsonl"
    first = log.intent("101", "create", target="users")
    second = log.intent("102", "update", target="users", target_id=7)
    third = log.intent("103", "update", target="users", target_id=8)
    fourth = log.intent("104", "deactivate", target="users", target_id=9)
    rows = jsonl(path)  # what a SIGKILL (or a power cut: fsynced) would leave now
    assert [(r["type"], r.get("seq"), r.get("key"), r.get("target"), r.get("id")) for r in rows] == [
        ("start", None, None, None, None),
        ("intent", first, "101", "users", None),
        ("intent", second, "102", "users", 7),
        ("intent", third, "103", "users", 8),
        ("intent", fourth, "104", "users", 9),
    ]
    log.change("101", "create", None, {"emp_id": "101"}, intent=first)
    log.error("102", "422 email taken", kind="failed", intent=second)
    log.settled(third, "nothing left to change after re-reading")
    files = log.finish({"created": 1, "failed": 1}, "partial")  # the fourth never got an answer
    doc = read(files.changes)
    assert doc["changes"][0]["intent"] == first and doc["changes"][0]["target"] == "users"
    assert files.errors is not None
    error = read(files.errors)["errors"][0]
    assert (error["intent"], error["action"], error["target"], error["id"]) == (second, "update", "users", 7)
    assert [(u["seq"], u["key"], u["action"], u["id"]) for u in doc["unconfirmed"]] == [(fourth, "104", "deactivate", 9)]


def test_a_quiet_run_leaves_one_small_changes_file(events: EventManager) -> None:
    files = events.start("titles").finish({"unchanged": 16}, "success")
    out = events.output_dir
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [f"changes/{files.changes.name}"]
    assert files.changes.stat().st_size < 600
    assert read(files.changes)["changes"] == [] and read(files.changes)["unconfirmed"] == []


def test_unwritable_output_dir_is_a_change_log_error(tmp_path: Path, clock: Clock) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ChangeLogError, match=r"^cannot write the change log: Not a directory \(.*a-file/out/changes\)$"):
        EventManager(blocker / "out", "run-1", clock=clock).start("jobs")


def test_a_full_disk_stops_intents_and_leaves_whole_lines(tmp_path: Path, clock: Clock) -> None:
    with small_tmpfs(tmp_path / "disk", 64, used_kb=40) as disk:
        events = EventManager(disk / "out", "run-1", clock=clock)
        log = events.start("employees")
        accepted = []
        with pytest.raises(ChangeLogError, match="No space left on device"):
            for n in range(100_000):
                seq = log.intent(f"key-{n}", "create", target="users")
                accepted.append(seq)
                log.change(f"key-{n}", "create", None, {"emp_id": f"key-{n}", "note": "x" * 300}, intent=seq)
        assert accepted, "the disk filled before the first intent: the test proves nothing"
        path = disk / "out" / "logs" / f"{log.name}.jsonl"
        rows = jsonl(path)  # json.loads of every line: none was cut in half
        assert [r["seq"] for r in rows if r["type"] == "intent"] == accepted
        (disk / "filler").unlink()  # space again, but this run's log already failed: it stays stopped
        with pytest.raises(ChangeLogError, match="No space left on device"):
            log.intent("after", "create", target="users")
        files = log.finish({"created": len(accepted)}, "failed", {"error": "cannot write the change log"})
        assert files.log == path and path.exists(), "a log that refused a line is kept: the files may lack what it holds"
        assert len(read(files.changes)["changes"]) in (len(accepted), len(accepted) - 1)


def test_a_full_disk_at_start_leaves_no_empty_log(tmp_path: Path, clock: Clock) -> None:
    with small_tmpfs(tmp_path / "disk", 16) as disk:
        (disk / "out" / "logs").mkdir(parents=True)
        with open(disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError, match="No space left"):
            while True:  # every last block
                filler.write(b"\0" * 512)
        with pytest.raises(ChangeLogError, match="No space left on device"):
            EventManager(disk / "out", "run-1", clock=clock).start("rosters")
        assert list((disk / "out" / "logs").iterdir()) == []


# --------------------------------------------------------------------- retention
def _run_files(out: Path, name: str, *, finished: bool = True, age_seconds: float = 0) -> list[Path]:
    paths = [out / "changes" / f"{name}.json", out / "errors" / f"{name}.json"] if finished else [out / "logs" / f"{name}.jsonl"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        if age_seconds:
            when = path.stat().st_mtime - age_seconds
            os.utime(path, (when, when))
    return paths


def test_prune_by_age_and_by_count_per_sync(tmp_path: Path, clock: Clock) -> None:
    out = tmp_path / "out"
    events = EventManager(out, "run-1", clock=clock)  # now: 2026-11-22 01:02:03
    old = _run_files(out, "jobs-20261020T000000Z")  # 33 days old
    recent = [_run_files(out, f"jobs-20261121T0{h}0000Z") for h in range(5)]
    same_second = _run_files(out, "jobs-20261121T040000Z-2")  # newest: "-2" after the plain name
    other_sync = _run_files(out, "vehicles-20261101T000000Z")
    deleted = events.prune(30, 3)
    assert sorted(deleted) == sorted(old + recent[0] + recent[1] + recent[2])
    assert all(p.exists() for p in recent[3] + recent[4] + same_second + other_sync)
    assert events.prune(0, 0) == []  # both rules off


def test_prune_spares_runs_in_progress_foreign_files_and_its_own_runs(tmp_path: Path, clock: Clock) -> None:
    out = tmp_path / "out"
    events = EventManager(out, "run-1", clock=clock)
    mine = events.start("jobs")  # in progress, and this manager's: never deleted
    killed = _run_files(out, "jobs-20260101T000000Z", finished=False, age_seconds=200 * 86400)
    running = _run_files(out, "jobs-20260102T000000Z", finished=False)  # old name, written to just now
    stale_tmp = out / "changes" / ".jobs-20260101T000000Z.json.abc123.tmp"
    stale_tmp.write_text("{")
    os.utime(stale_tmp, (0, 0))
    foreign = [out / "changes" / "README.txt", out / "errors" / "jobs-latest.json", out / "logs" / "jobs-notes.jsonl"]
    for path in foreign:
        path.write_text("operator's")
        os.utime(path, (0, 0))
    finished = [_run_files(out, f"jobs-20261121T0{h}0000Z") for h in range(3)]
    deleted = events.prune(30, 1)  # the newest finished run stays; "mine" is not finished yet
    assert sorted(deleted) == sorted(killed + [stale_tmp] + finished[0] + finished[1])
    assert all(p.exists() for p in running + foreign + finished[2])
    assert (out / "logs" / f"{mine.name}.jsonl").exists()
    files = mine.finish({}, "success")
    assert sorted(events.prune(30, 1)) == sorted(finished[2])  # now its own run is the newest
    assert files.changes.exists() and all(p.exists() for p in running + foreign)


def test_prune_never_raises(tmp_path: Path, clock: Clock) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "changes").write_text("a file where a folder should be")
    assert EventManager(out, "run-1", clock=clock).prune(30, 10) == []
    assert EventManager(tmp_path / "missing", "run-1", clock=clock).prune(30, 10) == []

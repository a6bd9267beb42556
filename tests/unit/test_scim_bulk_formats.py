"""The pure parts of SCIM Bulk (services/scim_api.py): cutting writes into requests,
building operations, reading a BulkResponse back onto each write (RFC 7644 section 3.7)."""

from __future__ import annotations

from services.scim_api import ScimAPI, ScimIntents, bulk_status, match_bulk_results
from sync.ports import ScimWrite
from utils.errors import AmbiguousWriteError, ConflictError, RateLimitedError, RecordError, RetriableError


def test_bulk_take_fills_a_request_to_max_operations_and_payload() -> None:
    class Announcing(ScimIntents):
        limits = (3, 1000)

        def bulk_limits(self) -> tuple[int, int]:
            return self.limits

    bulk = Announcing()
    small = [ScimWrite("deactivate_user", f"u{i}", {"id": str(i)}) for i in range(5)]
    assert ScimAPI.bulk_take(bulk, small) == 3  # type: ignore[arg-type]  # maxOperations
    big = ScimWrite("create_group", "g", None, {"displayName": "x" * 600})
    assert ScimAPI.bulk_take(bulk, [big, big, big]) == 1  # type: ignore[arg-type]  # the payload
    assert ScimAPI.bulk_take(bulk, [ScimWrite("create_group", "g", None, {"displayName": "x" * 5000})]) == 1  # alone
    # the size is the body as sent: requests writes JSON with ASCII escapes (an "é" is 6 bytes)
    bulk.limits = (3, 1600)
    ascii_ = ScimWrite("create_group", "g", None, {"displayName": "e" * 250})
    accented = ScimWrite("create_group", "g", None, {"displayName": "é" * 250})
    assert ScimAPI.bulk_take(bulk, [ascii_] * 3) == 3 and ScimAPI.bulk_take(bulk, [accented] * 3) == 1  # type: ignore[arg-type]


def test_bulk_status_reads_strings_numbers_and_the_draft_shape() -> None:
    assert (bulk_status("201"), bulk_status(200), bulk_status({"code": "409"}), bulk_status(None)) == (201, 200, 409, 0)


def test_operations_carry_bulk_id_version_and_the_single_request_formats() -> None:
    class WithEtags(ScimIntents):
        @property
        def etags(self) -> bool:
            return True

    intents = WithEtags()
    create = intents.bulk_operation(ScimWrite("create_user", "u0", None, {"userName": "a", "externalId": "s1", "active": True}))
    assert create["method"] == "POST" and create["path"] == "/Users" and create["bulkId"] == "u0"
    assert create["data"]["userName"] == "a" and "version" not in create
    row = {"id": "g/1", "meta": {"version": 'W/"3"'}}
    change = intents.bulk_operation(ScimWrite("change_members", "g0", row, add=("bulkId:u0", "x"), remove=("y",)))
    assert change["path"] == "/Groups/g%2F1" and change["version"] == 'W/"3"'
    assert change["data"]["Operations"] == [
        {"op": "add", "path": "members", "value": [{"value": "bulkId:u0"}, {"value": "x"}]},
        {"op": "remove", "path": 'members[value eq "y"]'},
    ]
    off = intents.bulk_operation(ScimWrite("deactivate_user", "u1", {"id": "7"}))
    assert off["data"]["Operations"] == [{"op": "replace", "path": "active", "value": False}]
    assert intents.bulk_operation(ScimWrite("delete_group", "g1", {"id": "9"}))["method"] == "DELETE"


def test_results_map_back_by_bulk_id_location_and_status() -> None:
    writes = [
        ScimWrite("create_user", "u0", None, {"userName": "a"}),
        ScimWrite("create_user", "u1", None, {"userName": "b"}),
        ScimWrite("update_user", "u2", {"id": "42"}, {"email": "x@y"}),
        ScimWrite("update_user", "u3", {"id": "43"}, {"email": "x@y"}),
        ScimWrite("change_members", "g0", {"id": "44"}),
        ScimWrite("create_group", "g1", None, {"displayName": "G"}),
    ]
    ops = [ScimIntents().bulk_operation(w) for w in writes]
    results = [
        {"method": "POST", "bulkId": "u0", "location": "https://x/v2/Users/abc", "status": "201"},
        {"method": "POST", "bulkId": "u1", "status": "409", "response": {"detail": "userName taken", "status": "409"}},
        {"method": "PATCH", "location": "https://x/v2/Users/42", "status": "200"},  # no bulkId echoed
        {"method": "PATCH", "bulkId": "u3", "status": "503"},
        {"method": "PATCH", "bulkId": "g0", "status": "429"},
    ]  # g1: not reported
    out = match_bulk_results(writes, ops, results)
    assert [o.ref for o in out] == ["u0", "u1", "u2", "u3", "g0", "g1"]
    assert (out[0].id, out[0].error) == ("abc", None)
    assert isinstance(out[1].error, ConflictError) and "userName taken" in out[1].error.message
    assert (out[2].id, out[2].error) == ("42", None)
    assert type(out[3].error) is RetriableError and out[3].error.status == 503
    assert isinstance(out[4].error, RateLimitedError)
    assert isinstance(out[5].error, AmbiguousWriteError) and out[5].error.settled  # the provider answered


def test_a_5xx_of_one_create_is_settled_ambiguous_and_a_400_a_record_error() -> None:
    writes = [
        ScimWrite("create_user", "u0", None, {"userName": "a"}),
        ScimWrite("update_user", "u1", {"id": "1"}, {"email": "e"}),
    ]
    ops = [ScimIntents().bulk_operation(w) for w in writes]
    out = match_bulk_results(writes, ops, [{"bulkId": "u0", "status": "500"}, {"bulkId": "u1", "status": "400"}])
    assert isinstance(out[0].error, AmbiguousWriteError) and out[0].error.settled
    assert type(out[1].error) is RecordError and out[1].error.status == 400

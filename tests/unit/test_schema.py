"""Round trips and hostile input for the znode codecs."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import schema
from controller.core.errors import SchemaError
from controller.core.model import BucketMap, BucketState, Health, HookStatus, HostHealth, Intents, Member


def sample_map() -> BucketMap:
    return BucketMap(
        "unix0",
        7,
        {
            1: BucketState("unix1", changed_epoch=3, since=10.0),
            2: BucketState(None, releasing="unix2", target="unix1", changed_epoch=7, since=11.5),
            3: BucketState(None),
        },
    )


def test_round_trips() -> None:
    m = sample_map()
    assert schema.decode_map(schema.encode_map(m)) == m
    member = Member("unix1", "198.18.0.11", "0.1.0", "nftables")
    assert schema.decode_member(schema.encode_member(member), "unix1") == member
    status = HookStatus("unix1", 7, frozenset({1, 3}), 12.0, "")
    assert schema.decode_status(schema.encode_status(status), "unix1") == status
    intents = Intents(frozenset({"unix2"}), {3: "unix1"}, {"unix4": 99.0}, True)
    assert schema.decode_intents(schema.encode_intents(intents)) == intents
    health = {"unix1": HostHealth("unix1", Health.DOWN, 5.0, "banner timeout 300 ms", 300.0)}
    assert schema.decode_health(schema.encode_health(health)) == health
    event = schema.HistoryEvent(1.0, 7, "grant", "unix2 down", "ctl-a", 2, "unix2", "unix1")
    assert schema.decode_event(schema.encode_event(event)) == event


def doc(kind: str, **body: object) -> bytes:
    return json.dumps({"schema": 1, "kind": kind, **body}).encode()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\xff\xfe", "UTF-8 JSON"),
        (b"[1,2]", "expected a JSON object"),
        (json.dumps({"schema": 2, "kind": "bucket-map"}).encode(), "schema version 2 is not supported"),
        (doc("member"), "kind is 'member'"),
        (doc("bucket-map", cluster="c", epoch=-1, buckets={}), "epoch: -1 is outside"),
        (doc("bucket-map", cluster="c", epoch=1, buckets={"0": {}}), "not a bucket number"),
        (doc("bucket-map", cluster="c", epoch=1, buckets={"2": {"owner": None, "changed_epoch": 0}}), "without gaps"),
        (
            doc("bucket-map", cluster="c", epoch=1, buckets={"1": {"owner": "../x", "changed_epoch": 0}}),
            "not a valid host id",
        ),
        (
            doc(
                "bucket-map", cluster="c", epoch=1, buckets={"1": {"owner": "a", "releasing": "b", "changed_epoch": 0}}
            ),
            "both an owner and a releasing host",
        ),
        (b"{" + b" " * (300 * 1024) + b"}", "exceeds"),
    ],
)
def test_hostile_maps_are_rejected_with_the_field(data: bytes, needle: str) -> None:
    with pytest.raises(SchemaError, match=None) as info:
        schema.decode_map(data)
    assert needle in str(info.value)


def test_rogue_member_claiming_another_host_is_rejected() -> None:
    data = schema.encode_member(Member("unix2", "x", "v", "nftables"))
    with pytest.raises(SchemaError, match="claims host id 'unix2'"):
        schema.decode_member(data, expected_host="unix1")
    status = schema.encode_status(HookStatus("unix2", 1, frozenset({1}), 0.0))
    with pytest.raises(SchemaError, match="claims host id"):
        schema.decode_status(status, expected_host="unix1")


def test_status_with_too_many_buckets_is_rejected() -> None:
    data = doc("hook-status", host_id="a", epoch=1, held=list(range(1, 300)), updated=0.0)
    with pytest.raises(SchemaError, match="at most 256"):
        schema.decode_status(data)


DECODERS = [
    schema.decode_map,
    schema.decode_member,
    schema.decode_status,
    schema.decode_intents,
    schema.decode_health,
    schema.decode_event,
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(DECODERS),
    st.sampled_from(["bucket-map", "member", "hook-status", "intents", "health", "history-event"]),
    json_values,
)
def test_decoders_raise_only_schema_error_on_garbage(decoder, kind, body) -> None:  # type: ignore[no-untyped-def]
    payload = {"schema": 1, "kind": kind}
    if isinstance(body, dict):
        payload.update(body)
    for data in (json.dumps(payload).encode(), json.dumps(body).encode()):
        with contextlib.suppress(SchemaError):
            decoder(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoders_raise_only_schema_error_on_random_bytes(data: bytes) -> None:
    for decoder in DECODERS:
        with contextlib.suppress(SchemaError):
            decoder(data)


# --------------------------------------------------------------------------- draining (issue 9)


def test_drain_fields_round_trip_and_old_documents_still_read() -> None:
    drained = BucketMap("unix0", 9, {
        1: BucketState("unix1", changed_epoch=9, since=10.0, draining="unix3", drain_since=9.5, drain_epoch=8,
                       drain_sessions=4),
        2: BucketState(None, releasing="unix2", target="unix1", changed_epoch=9, draining="unix2", drain_epoch=9),
    })
    assert schema.decode_map(schema.encode_map(drained)) == drained
    status = HookStatus("unix3", 9, frozenset({3}), 12.0, "", draining=frozenset({1}), sessions={1: 4})
    assert schema.decode_status(schema.encode_status(status), "unix3") == status
    event = schema.HistoryEvent(1.0, 9, "drain-end", "last session closed", "c", 1, "unix3", None, 4, 0)
    assert schema.decode_event(schema.encode_event(event)) == event
    # Written before draining existed: no drain keys at all.
    assert b"draining" not in schema.encode_map(sample_map())
    old_status = b'{"schema":1,"kind":"hook-status","host_id":"unix1","epoch":3,"held":[1],"updated":1.0,"error":""}'
    assert schema.decode_status(old_status, "unix1") == HookStatus("unix1", 3, frozenset({1}), 1.0)


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        ({"draining": "unix1", "drain_epoch": 1}, "both owns and drains"),
        ({"draining": "unix3"}, "drain_epoch: expected an integer"),
        ({"draining": "bad host!"}, "not a valid host id"),
        ({"draining": "unix3", "drain_epoch": 99}, "outside"),
        ({"draining": "unix3", "drain_epoch": 1, "drain_sessions": -1}, "outside"),
        ({"draining": "unix3", "drain_epoch": 1, "drain_since": "soon"}, "finite number"),
    ],
)
def test_hostile_drain_fields_are_rejected(patch: dict[str, object], problem: str) -> None:
    doc = json.loads(schema.encode_map(sample_map()))
    doc["buckets"]["1"].update(patch)
    with pytest.raises(SchemaError, match=problem):
        schema.decode_map(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        ({"sessions": {"1": -3}}, "outside"),
        ({"sessions": {"999": 1}}, "not a bucket number"),
        ({"sessions": [1]}, "expected an object"),
        ({"sessions": {"1": True}}, "expected an integer"),
        ({"draining": "1"}, "list of at most"),
        ({"draining": [0]}, "not a bucket number"),
    ],
)
def test_hostile_status_drain_fields_are_rejected(patch: dict[str, object], problem: str) -> None:
    doc = json.loads(schema.encode_status(HookStatus("unix1", 3, frozenset({1}), 1.0)))
    doc.update(patch)
    with pytest.raises(SchemaError, match=problem):
        schema.decode_status(json.dumps(doc).encode(), "unix1")


def test_status_deadman_field_round_trips_and_is_optional() -> None:
    armed = HookStatus("unix1", 3, frozenset({1}), 1.0, deadman_s=0.9)
    assert schema.decode_status(schema.encode_status(armed), "unix1") == armed
    plain = HookStatus("unix1", 3, frozenset({1}), 1.0)
    assert b"deadman_s" not in schema.encode_status(plain)  # statuses without a switch stay as before
    old = json.loads(schema.encode_status(plain))  # written by a hook that predates the field
    assert schema.decode_status(json.dumps(old).encode(), "unix1").deadman_s is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [(0, "outside"), (-1.0, "outside"), (1e9, "outside"), ("0.9", "finite number"), (True, "finite number"),
     (float("inf"), "finite number")],
)
def test_hostile_status_deadman_field_is_rejected(value: object, problem: str) -> None:
    doc = json.loads(schema.encode_status(HookStatus("unix1", 3, frozenset({1}), 1.0)))
    doc["deadman_s"] = value
    with pytest.raises(SchemaError, match=problem):
        schema.decode_status(json.dumps(doc).encode(), "unix1")

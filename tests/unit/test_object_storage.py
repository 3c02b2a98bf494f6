from __future__ import annotations

import pytest

from counters.object_storage import DELETED, ObjectStorage, decode_value, encode_value


def test_get_put_delete_list() -> None:
    storage = ObjectStorage()
    assert storage.get("missing") is None
    assert storage.get("missing", 7) == 7
    storage.put("a/1", {"x": [1, 2]})
    storage.put("a/2", "two")
    storage.put("b", 3)
    assert storage.get("a/1") == {"x": [1, 2]}
    assert storage.list("a/") == {"a/1": {"x": [1, 2]}, "a/2": "two"}
    assert storage.delete("a/2") is True
    assert storage.delete("a/2") is False
    assert storage.list() == {"a/1": {"x": [1, 2]}, "b": 3}


@pytest.mark.parametrize(
    "value", [0, -5, 2**63 - 1, -(2**63), 1.5, "-5", "--5", "٣", None, True, [1, "a"]]
)
def test_values_round_trip_exactly(value: object) -> None:
    # Integers take a fast path; everything else, digit-like strings included, stays JSON.
    decoded = decode_value(encode_value(value))
    assert decoded == value
    assert type(decoded) is type(value)


def test_values_are_copies() -> None:
    storage = ObjectStorage()
    value = {"items": [1]}
    storage.put("k", value)
    value["items"].append(2)
    got = storage.get("k")
    got["items"].append(3)
    assert storage.get("k") == {"items": [1]}


def test_unserializable_values_and_keys_are_refused() -> None:
    storage = ObjectStorage()
    with pytest.raises(TypeError, match="JSON"):
        storage.put("k", object())
    with pytest.raises(TypeError, match="JSON"):
        storage.put("k", float("nan"))
    with pytest.raises(TypeError, match="keys"):
        storage.put(1, 1)  # type: ignore[arg-type]


def test_a_dropped_operation_leaves_no_trace() -> None:
    storage = ObjectStorage({"value": "5"})
    storage.put("value", 6)
    storage.put("other", 1)
    storage.end_operation(keep=False)
    assert storage.get("value") == 5
    assert storage.get("other") is None
    assert not storage.has_staged()


def test_batch_lifecycle_commit_and_abort() -> None:
    storage = ObjectStorage({"value": "5", "gone": "1"})
    storage.put("value", 6)
    storage.delete("gone")
    storage.end_operation(keep=True)
    assert dict(storage.staged()) == {"value": "6", "gone": DELETED}
    storage.abort()
    assert storage.get("value") == 5
    assert storage.get("gone") == 1
    storage.put("value", 7)
    storage.delete("gone")
    storage.end_operation(keep=True)
    storage.commit()
    assert not storage.has_staged()
    assert storage.get("value") == 7
    assert storage.get("gone") is None
    assert storage.list() == {"value": 7}

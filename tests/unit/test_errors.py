"""Every error's code, status and retry safety, written out here rather than read back from it."""

from __future__ import annotations

import inspect
import pickle
import re

import pytest

from counters import errors

# (code, http_status, retry_safe) of every error, as errors.py's docstring and class bodies say.
EXPECTED: dict[type[errors.CountersError], tuple[str, int, bool]] = {
    errors.CountersError: ("internal", 500, False),
    errors.InvalidInput: ("invalid_input", 400, True),
    errors.InvalidName: ("invalid_name", 400, True),
    errors.InvalidAmount: ("invalid_amount", 400, True),
    errors.UnknownMethod: ("unknown_method", 400, True),
    errors.CountOutOfRange: ("count_out_of_range", 422, True),
    errors.OutOfBounds: ("out_of_bounds", 409, True),
    errors.VersionMismatch: ("version_mismatch", 412, True),
    errors.IdempotencyKeyReused: ("idempotency_key_reused", 422, False),
    errors.StorageFailed: ("storage_failed", 503, True),
    errors.StorageFull: ("storage_full", 507, True),
    errors.StorageBusy: ("storage_busy", 503, True),
    errors.Fenced: ("fenced", 503, True),
    errors.Overloaded: ("overloaded", 503, True),
    errors.WatcherDropped: ("watcher_dropped", 503, True),
    errors.HostUnavailable: ("host_unavailable", 503, True),
    errors.OutcomeUnknown: ("outcome_unknown", 503, False),
    errors.ConfigError: ("config_error", 500, False),
    errors.LayoutMismatch: ("layout_mismatch", 500, False),
    errors.StorageDirInUse: ("storage_dir_in_use", 500, False),
}
ROWS = pytest.mark.parametrize(
    ("cls", "expected"), EXPECTED.items(), ids=[cls.__name__ for cls in EXPECTED]
)


def defined_errors() -> set[type[errors.CountersError]]:
    return {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.CountersError) and cls.__module__ == errors.__name__
    }


def test_the_table_has_a_row_for_every_error() -> None:
    assert defined_errors() == set(EXPECTED)  # a new error needs its row above


@ROWS
def test_each_error_has_its_code_status_and_retry_safety(
    cls: type[errors.CountersError], expected: tuple[str, int, bool]
) -> None:
    assert (cls.code, cls.http_status, cls.retry_safe) == expected


@ROWS
def test_each_error_keeps_them_and_its_message_through_pickle(
    cls: type[errors.CountersError], expected: tuple[str, int, bool]
) -> None:
    copy = pickle.loads(pickle.dumps(cls("something went wrong")))
    assert type(copy) is cls
    assert copy.message == "something went wrong"
    assert str(copy) == "something went wrong"
    assert (copy.code, copy.http_status, copy.retry_safe) == expected


def test_the_documented_tree_gives_each_error_its_status() -> None:
    assert errors.__doc__ is not None
    documented = {
        name: int(status) for name, status in re.findall(r"── (\w+) +(\d{3}) ", errors.__doc__)
    }
    assert documented == {
        cls.__name__: status
        for cls, (_, status, _) in EXPECTED.items()
        if cls is not errors.CountersError  # the root of the tree, drawn without a status
    }


def test_every_error_is_exported() -> None:
    assert sorted(errors.__all__) == sorted(cls.__name__ for cls in EXPECTED)

from __future__ import annotations

import inspect
import pickle

import pytest

from counters import errors


def all_errors() -> list[type[errors.CountersError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.CountersError)
    ]


@pytest.mark.parametrize("cls", all_errors())
def test_every_error_pickles_with_its_message(cls: type[errors.CountersError]) -> None:
    error = cls("something went wrong")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert copy.message == "something went wrong"
    assert (copy.http_status, copy.retry_safe, copy.code) == (
        cls.http_status,
        cls.retry_safe,
        cls.code,
    )


@pytest.mark.parametrize("cls", all_errors())
def test_every_error_is_in_the_documented_tree(cls: type[errors.CountersError]) -> None:
    assert errors.__doc__ is not None
    assert cls.__name__ in errors.__doc__
    assert str(cls.http_status) in errors.__doc__
    assert cls.__name__ in errors.__all__


def test_outcome_unknown_is_not_retry_safe() -> None:
    assert not errors.OutcomeUnknown.retry_safe
    assert errors.StorageFailed.retry_safe

import pickle

import pytest

import shardwalk.errors as errors
from shardwalk.errors import ShardwalkError, error_for_code

ALL = [getattr(errors, name) for name in errors.__all__ if name != "error_for_code"]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_pickles_with_its_message_and_code(cls):
    exc = cls("what was expected; what came; a hint")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == "what was expected; what came; a hint"
    assert back.code == cls.code


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_code_maps_back_to_the_class(cls):
    assert error_for_code(cls.code) is cls


GRPC_STATUS_NAMES = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
}


def test_codes_are_distinct_grpc_status_names():
    codes = [cls.code for cls in ALL if cls is not ShardwalkError]
    assert len(codes) == len(set(codes))
    assert set(codes) <= GRPC_STATUS_NAMES


def test_builtin_bases_let_callers_catch_naturally():
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.NotFoundError, KeyError)
    # KeyError normally quotes its message; ours reads as written.
    assert str(errors.NotFoundError("no collection 'x'")) == "no collection 'x'"
    assert error_for_code("SOMETHING_ELSE") is ShardwalkError

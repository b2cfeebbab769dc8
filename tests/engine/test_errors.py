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


def test_collections_and_graphs_judge_ids_and_k_by_one_rule():
    """Regression: collections accepted whole-number float ids that graphs refused, graphs
    allowed negative node ids, and k had two messages. One rule, one message each."""
    import numpy as np

    import shardwalk

    with shardwalk.Engine.memory() as engine:
        col = engine.create_collection("c", dim=2)
        graph = engine.create_graph("g", np.array([[0, 1], [1, 2]]))
        float_ids = r"must be integers \(int64\); got dtype float64.*astype\(np.int64\)"
        with pytest.raises(errors.InvalidArgumentError, match=float_ids):
            col.upsert(np.array([1.0, 2.0]), np.ones((2, 2)))
        with pytest.raises(errors.InvalidArgumentError, match=float_ids):
            engine.create_graph("h", np.array([[0.0, 1.0]]))
        negative = r"must be non-negative int64 \(-1 marks padding in results\); got -3"
        with pytest.raises(errors.InvalidArgumentError, match=negative):
            col.upsert([-3], np.ones((1, 2)))
        with pytest.raises(errors.InvalidArgumentError, match=negative):
            engine.create_graph("h", np.array([[-3, 1]]))
        for k, cls in ((0, errors.InvalidArgumentError), (10**6, errors.ResourceExhaustedError)):
            with pytest.raises(cls) as on_collection:
                col.search(np.ones(2), k=k)
            with pytest.raises(cls) as on_graph:
                graph.ppr(0, k=k, method="exact")
            assert str(on_collection.value) == str(on_graph.value)

"""The parameters the index kinds share (index/base.py's IndexBase, index/hnsw.py's
HNSWParams and OnHNSW): taken as keywords, kept once, written and read back alike."""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.index import FlatIndex, HNSWIndex, MultiTenantIndex, PartitionedIndex, SpannIndex
from shardwalk.index.hnsw import HNSWParams

from shardwalk._threads import ThreadBudget


@pytest.mark.parametrize("cls", [HNSWIndex, PartitionedIndex, SpannIndex])
def test_the_hnsw_keywords_become_the_kinds_hnsw_params(cls):
    index = cls(dim=8, metric="ip", m=12, ef_construction=40, ef=21, seed=3, threads=1)
    assert index.hnsw == HNSWParams(m=12, ef_construction=40, ef=21)
    assert index.ef == 21
    assert {k: index.params()[k] for k in ("m", "ef_construction", "ef")} == {
        "m": 12,
        "ef_construction": 40,
        "ef": 21,
    }
    assert (index.dim, index.metric, index.seed, index.threads) == (8, "ip", 3, 1)


def test_defaults_are_the_papers_except_spanns_ef():
    assert HNSWIndex(dim=4, metric="l2").hnsw == HNSWParams(m=16, ef_construction=200, ef=64)
    assert PartitionedIndex(dim=4, metric="l2").hnsw == HNSWParams()
    # SPANN's ef 0: twice the lists fetched (at least 32), per search
    assert SpannIndex(dim=4, metric="l2").hnsw == HNSWParams(ef=0)


@pytest.mark.parametrize("cls", [HNSWIndex, PartitionedIndex, SpannIndex, MultiTenantIndex])
def test_an_unknown_keyword_is_refused(cls):
    with pytest.raises(TypeError, match="efc"):
        cls(dim=4, metric="l2", efc=10)


@pytest.mark.parametrize("cls", [FlatIndex, HNSWIndex, PartitionedIndex, MultiTenantIndex])
def test_every_kind_takes_the_budget_it_is_given(cls):
    budget = ThreadBudget(2)
    assert cls(dim=4, metric="l2", budget=budget).budget is budget


@pytest.mark.parametrize("cls", [HNSWIndex, PartitionedIndex, SpannIndex])
def test_a_saved_index_comes_back_with_its_parameters(tmp_path, cls):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    extra = {"partitions": 2, "train_size": 100} if cls is PartitionedIndex else {}
    if cls is SpannIndex:
        extra = {"max_list_size": 16, "eps_search": 0.5}
    index = cls(dim=8, metric="l2", m=8, ef_construction=30, ef=17, seed=5, **extra)
    index.add(np.arange(300), vectors)
    index.save(str(tmp_path))
    back = cls.load(str(tmp_path))
    assert back.hnsw == index.hnsw and back.seed == 5
    assert back.params() == index.params()
    np.testing.assert_array_equal(back.search(vectors[:5], 3).ids, index.search(vectors[:5], 3).ids)


@pytest.mark.parametrize("cls", [FlatIndex, PartitionedIndex, MultiTenantIndex, SpannIndex])
def test_add_takes_any_integer_labels_and_nothing_is_a_no_op(cls):
    index = cls(dim=4, metric="l2")
    index.add([], np.zeros((0, 4), dtype=np.float32))
    assert len(index) == 0
    index.add([0, 1, 2], np.eye(3, 4, dtype=np.float32))  # a list of ints: labels as int64
    assert len(index) == 3
    np.testing.assert_array_equal(index.get(np.array([1])), np.eye(3, 4, dtype=np.float32)[1:2])

"""The seeded power-law generator."""

from __future__ import annotations

import numpy as np
from shardwalk.walks.generators import power_law_graph


def test_power_law_graph_is_seeded_and_skewed():
    g = power_law_graph(5000, 25_000, seed=3).validate()
    h = power_law_graph(5000, 25_000, seed=3)
    np.testing.assert_array_equal(g.indices, h.indices)
    assert 24_000 < g.num_edges <= 25_000  # self-loops and duplicates removed
    deg = g.out_degrees()
    assert deg.max() > 20 * deg.mean()  # heavy tail
    assert (deg == 0).sum() > 0  # dangling nodes exist, as in real graphs
    assert np.all(g.indices[g.indptr[:-1][deg > 0]] >= 0)
    w = power_law_graph(100, 400, seed=1, weighted=True)
    assert w.weighted and np.all(w.weights >= 0.5)

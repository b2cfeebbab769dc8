"""Graphs, walk kernels, fingerprints, personalized PageRank and FastRP (``shardwalk.walks``)."""

"""SPANN (Chen et al., NeurIPS 2021): posting lists on disk, their centroids in memory.

Only the centroids, their HNSW graph and two bytes per row (a version, with a deleted flag)
stay in memory; the vectors live in posting lists in files, one file per *generation*, each
list one contiguous run of records (an int64 key, label | version << 48, then the vector), read
with one positioned read or one memory-mapped range per probe.

The paper's three ideas, each with its parameter:

1. Hierarchical balanced clustering (:func:`cluster_lists`): balanced k-means
   (:func:`~shardwalk.index.kmeans.balanced_kmeans`), recursively, until every list holds at
   most ``max_list_size // 2`` primary vectors (room for replicas), so there are many small
   lists (on the order of 5-10% of the points become centroids).
2. Boundary replication (:func:`assign_lists`): a vector also joins every list whose centroid
   is within (1 + ``eps_build``) x its nearest centroid's distance, at most ``max_replicas``,
   skipping a centroid closer to one already chosen than to the vector (the RNG rule). A
   list past ``max_list_size`` keeps its closest records (as SPTAG's posting limit does).
3. Query-aware pruning: a query probes list i only if d(q, c_i) <= (1 + ``eps_search``) x
   d(q, c_1), at most ``max_probes`` lists; replicas are merged before the top-k.

Updates follow SPFresh (Xu et al., SOSP 2023): an insert appends to the tails of its lists
(searchable at once); a list past ``max_list_size`` is split in two by 2-means in a background
thread, so a row stays searchable throughout.

Versions make moved and replaced copies stale without rewriting them; deletes are tombstones.
Splits, relocations and :meth:`SpannIndex.compact` drop stale records.

Concurrency: searches hold the readers/writer lock ``_rw`` shared for their whole run; every
change a search can see (the centroid graph, the list table, versions, the row map, the live
count) is *published* under it exclusively, in one step per write. The slow parts run before:
the k-means, the graph searches that place vectors, and the writes of new records (past the
tail a list's table entry ends at, or into a fresh run that no entry names yet), so a search
sees the index before or after a write or a split, never between (a list's new centroid with
its old postings, a row's new version before its new record). A write that fails before its
publication leaves the index as it was. Splits and garbage collection run on one worker
thread, started by whoever queues a split when none is running; it decides to stop under the
same lock a producer queues under, so no queued split is left behind. A failed split is
logged (ERROR) and counted in :meth:`SpannIndex.stats` (``background_failures``); the list
stays as it was, searchable, and is tried again by the next worker run. Writers never see it.

The build streams: it clusters a sample (``train_size``), then assigns and writes the lists a
chunk at a time, so ``add`` on a memory-mapped array builds an index larger than memory (a
cluster job calls :func:`cluster_lists`, :func:`assign_lists` and :func:`write_lists` on its
share of the vectors).

Files: new lists go to the open generation (in ``workdir``, a temporary directory by default);
:meth:`SpannIndex.save` seals it and hard-links (or copies) every generation into the snapshot
directory, so a saved generation is never written again: a list of a sealed generation that
grows is copied to the open one. The label -> primary record map is a memory-mapped file too.

The package: :mod:`.format` (records, posting files, the snapshot), :mod:`.build` (clustering,
replication, the streamed build), :mod:`.maintenance` (splits, their worker, compaction) and
:mod:`.index` (:class:`SpannIndex`: writes, searches, statistics).
"""

from __future__ import annotations

from shardwalk.index.spann.build import assign_lists, cluster_lists, write_lists
from shardwalk.index.spann.index import SpannIndex

__all__ = ["SpannIndex", "assign_lists", "cluster_lists", "write_lists"]

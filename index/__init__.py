"""Vector indexes, partitioning, tenancy and filters (``shardwalk.index``)."""

"""gRPC query service (``shardwalk.server``)."""

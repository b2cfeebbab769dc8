"""Generated gRPC code of the shardwalk.v1 service (``python proto/generate.py``; do not edit).

Imported only by the server and the clients: ``import shardwalk`` loads neither this package
nor grpc.
"""

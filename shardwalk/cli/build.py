"""``shardwalk build``: a collection from a Parquet dataset as a batch job, on threads or on
Ray (:func:`shardwalk.jobs.build_collection`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from shardwalk.cli.common import (
    CREATED_IF_MISSING,
    METRICS,
    add_command,
    column_args,
    param_errors,
    param_flag,
    parse_params,
    ray_flags,
    target_flags,
)
from shardwalk.cli.progress import stage_bars

__all__ = ["add_build", "cmd_build"]


def cmd_build(args: argparse.Namespace) -> int:
    from shardwalk.jobs import build_collection

    params = parse_params(args.param)
    with param_errors(args.param), stage_bars(f"build {args.collection!r}") as progress:
        report = build_collection(
            args.data,
            args.collection,
            args.input,
            index=args.index,
            metric=args.metric,
            **column_args(args),
            shared_with_column=args.shared_with_column,
            attribute_columns=args.attribute_column or None,
            num_workers=args.num_workers,
            address=args.address,
            ray=args.ray,
            progress=progress,
            **params,
        )
    report.pop("tasks", None)
    if args.json:
        print(json.dumps(report))
    else:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in report["seconds"].items() if k != "total")
        print(
            f"built {args.collection!r}: {report['rows']} rows x {report['dim']}, "
            f"{report['partitions']} partitions, {report['seconds']['total']:.2f}s on "
            f"{report['workers']} {report['executor']} workers ({stages})"
        )
    return 0


def add_build(sub: Any) -> None:
    p = add_command(
        sub,
        "build",
        "build a collection from a Parquet dataset, on threads or on Ray",
        "Build a collection from Parquet files as a batch job: every row is checked (a bad row "
        "stops the job naming its file and row), the partitions are trained on a sample and "
        "built in parallel, and one manifest commit makes the collection (or its new version, "
        "replacing the old) visible. --ray runs it on a local Ray, --address on a cluster.",
        run=cmd_build,
    )
    target_flags(p, "--collection", "collection name (replaced if it exists)", CREATED_IF_MISSING)
    p.add_argument("--input", required=True, help="Parquet file or directory of them")
    p.add_argument(
        "--index",
        default="partitioned",
        choices=["partitioned", "hnsw", "flat", "multitenant", "spann"],
        help="index kind",
    )
    p.add_argument("--metric", default="l2", choices=METRICS, help="distance")
    param_flag(
        p,
        "index parameter, e.g. --param partitions=16 --param ef_construction=200",
    )
    p.add_argument("--id-column", default="id", help="column of the int64 ids")
    p.add_argument("--vector-column", default="vector", help="column of the vectors")
    p.add_argument("--tenant-column", default=None, help="column of the owner tenants")
    p.add_argument("--shared-with-column", default=None, help="column of further tenants")
    p.add_argument(
        "--attribute-column",
        action="append",
        default=[],
        metavar="NAME",
        help="attribute column (repeatable; default: every other column)",
    )
    ray_flags(
        p,
        "tasks at once on Ray, or threads without it (default: one per CPU of the Ray cluster, "
        "or per core here)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")

"""`alphapanda bench ...`: benchmarks as commands that print figures (medians of several runs)."""

from __future__ import annotations

import argparse
from typing import Any

from alphapanda.cli_args import output_file, positive_number, whole_number, whole_numbers
from alphapanda.config import ConfigError


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="print benchmark figures (not tests)")
    which = bench.add_subparsers(dest="bench", required=True)
    bt = which.add_parser(
        "backtest",
        help="the reference workload: alphapanda backtest vs plain Python vs NautilusTrader",
        description="Generates the reference workload (bench-workload.md, needs numpy: the `bench` extra).",
    )
    bt.add_argument(
        "--ticks", type=whole_number, default=1_000_000, help="ticks in the workload (default 1,000,000)"
    )
    bt.add_argument(
        "--instruments",
        type=whole_numbers,
        default=[1, 50],
        help="comma list of instrument counts (default 1,50)",
    )
    bt.add_argument("--runs", type=whole_number, default=3, help="runs per engine; the median is printed")
    bt.add_argument(
        "--ours-ticks",
        type=whole_number,
        help="run alphapanda on only the first N ticks (it is slow; its rate is per tick either way)",
    )
    bt.add_argument(
        "--profile", type=output_file(), help="also cProfile alphapanda on 50,000 ticks into this file"
    )
    pl = which.add_parser(
        "pipeline",
        help="the Kafka pipeline on the embedded broker and Redis vs the raw broker round trip",
    )
    pl.add_argument("--ticks", type=whole_number, default=20_000, help="ticks per throughput run")
    pl.add_argument("--runs", type=whole_number, default=3, help="throughput runs; the median is printed")
    pl.add_argument("--latency-rate", type=positive_number, default=200.0, help="ticks/s of the latency run")
    ht = which.add_parser("http", help="events/s through one functions-framework stage vs a no-op function")
    ht.add_argument("--events", type=whole_number, default=2_000, help="events per run")
    ht.add_argument("--runs", type=whole_number, default=3, help="runs; the median is printed")


def run(args: argparse.Namespace) -> int | None:
    if args.command != "bench":
        return None
    if args.bench == "backtest":
        from alphapanda.bench.backtest import bench

        for count in args.instruments:
            if args.ticks % count:
                raise ConfigError(
                    f"--ticks {args.ticks:,} is not a multiple of --instruments {count}: the workload "
                    f"gives every instrument the same number of ticks"
                )
        if args.ours_ticks is not None and args.ours_ticks < max(args.instruments):
            raise ConfigError(
                f"--ours-ticks {args.ours_ticks:,} is fewer than --instruments {max(args.instruments)}: "
                f"give every instrument a tick at least"
            )
        bench(args.ticks, args.instruments, args.runs, args.ours_ticks, args.profile)
        return 0
    if args.bench == "pipeline":
        from alphapanda.bench.pipeline import bench as bench_pipeline

        bench_pipeline(args.ticks, args.latency_rate, args.runs)
        return 0
    if args.bench == "http":
        from alphapanda.bench.http import bench as bench_http

        bench_http(args.events, args.runs)
        return 0
    return None

"""`alphapanda backtest` and `alphapanda replay`: the pipeline's handlers on recorded or simulated ticks.

`register(subparsers)` adds the commands; `run(args)` runs one of them, or returns None when
the command is not one of these (cli.py tries each command module in turn).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphapanda.cli_args import (
    aware_time,
    existing_file,
    output_file,
    positive_number,
    time_window,
    whole_number,
)
from alphapanda.config import ConfigError, Settings, first_instruments, load_settings
from alphapanda.events import Event
from alphapanda.feed import TickStamper

if TYPE_CHECKING:
    from alphapanda.runtime.tickfiles import TickRow

PLOT_SUFFIXES = (".png", ".svg", ".html", ".htm")
DEFAULT_START = "2026-01-05T09:15:00+05:30"
"""A Monday NSE session open: simulated ticks from here pass the risk manager's session rule."""


def register(subparsers: Any) -> None:
    bt = subparsers.add_parser(
        "backtest",
        help="run the pipeline's own stages in-process on a tick file or simulated ticks",
        description="Strategy runner -> risk -> trading engine -> order matcher -> portfolio, in one "
        "process, without Kafka or HTTP; the same input always gives the same report.",
    )
    source = bt.add_mutually_exclusive_group(required=True)
    source.add_argument("--ticks", type=existing_file, help="CSV (or .parquet) tick file")
    source.add_argument("--simulate", type=whole_number, metavar="N", help="simulate N ticks")
    bt.add_argument("--strategies", type=existing_file, help="strategies YAML (default: the shipped one)")
    bt.add_argument("--broker", default="paper", help="the paper broker to trade on (default paper)")
    bt.add_argument("--from", dest="start", type=aware_time, help="first tick time (inclusive, ISO 8601)")
    bt.add_argument("--to", dest="end", type=aware_time, help="last tick time (exclusive, ISO 8601)")
    bt.add_argument("--state", choices=("memory", "redis"), default="memory")
    bt.add_argument("--json", type=output_file(".json"), metavar="OUT", help="write the report as JSON")
    bt.add_argument(
        "--plot",
        type=output_file(*PLOT_SUFFIXES),
        metavar="OUT",
        help="equity + drawdown plot: .png, .svg or .html",
    )
    bt.add_argument("--instruments", type=whole_number, help="--simulate: the first N instruments")
    bt.add_argument("--seed", type=int, default=7, help="--simulate: simulator seed")
    bt.add_argument(
        "--sim-start",
        type=aware_time,
        default=aware_time(DEFAULT_START),
        help="--simulate: time of the first tick",
    )
    bt.add_argument(
        "--bar", type=positive_number, default=60.0, help="equity sampling bar, seconds (Sharpe basis)"
    )
    bt.add_argument("--no-progress", action="store_true", help="no progress bar")

    rp = subparsers.add_parser(
        "replay",
        help="re-run a recorded session from the Kafka log through the running pipeline, for a replay broker",
        description="Reads the ticks topic from a time or offset and publishes each live tick again with "
        "a new id (a new correlation namespace) and the broker extension set to --broker (a paper "
        "broker named *-replay). The running stages give such ticks to that broker only, with its own "
        "indicator and quote state, so live brokers never see them.",
    )
    rp.add_argument("--topic", default="market.equity.ticks")
    rp.add_argument("--from", dest="start", required=True, help="ISO 8601 time, or a log offset")
    rp.add_argument("--to", dest="end", type=aware_time, help="stop at this tick time (exclusive)")
    rp.add_argument(
        "--broker", default="paper-replay", help="the replay broker (a paper broker named *-replay)"
    )


def run(args: argparse.Namespace) -> int | None:
    if args.command == "backtest":
        return _backtest(args)
    if args.command == "replay":
        return _replay(args)
    return None


# --- backtest ------------------------------------------------------------------------------------


def backtest_settings(broker: str, strategies: Path | None, **extra: Any) -> Settings:
    from alphapanda.topics import broker_kind

    try:
        if broker_kind(broker) != "paper":
            raise ConfigError(f"--broker {broker}: a backtest trades a paper broker (paper, paper-2, ...)")
    except ValueError as exc:
        raise ConfigError(f"--broker {broker}: {exc}") from None
    overrides: dict[str, Any] = {"brokers": (broker,), **extra}
    if strategies is not None:
        overrides["strategies_file"] = strategies
    return load_settings(**overrides)


def tick_source(
    args: argparse.Namespace, settings: Settings
) -> tuple[Iterator[Event] | Iterator[TickRow], int | None]:
    """The run's ticks, and how many there will be if known: a tick file as validated rows (the
    backtest turns the few that cause events into events), simulated ticks as stamped events."""
    from alphapanda.runtime.backtest import between, between_rows
    from alphapanda.runtime.bootstrap import build_core
    from alphapanda.runtime.feed import fixed_simulation
    from alphapanda.runtime.tickfiles import read_tick_rows

    windowed = args.start is not None or args.end is not None
    if args.ticks is not None:
        rows = read_tick_rows(args.ticks)
        return (between_rows(rows, args.start, args.end) if windowed else rows), None
    stamper = TickStamper()
    instruments = first_instruments(build_core(settings).instruments, args.instruments)
    ticks = fixed_simulation(instruments, args.seed, args.sim_start, args.simulate)
    events = (stamper.stamp(t) for t in ticks)
    if windowed:
        return between(events, args.start, args.end), None
    return events, args.simulate


def _backtest(args: argparse.Namespace) -> int:
    import time

    from alphapanda.runtime.backtest import Backtest, BacktestStateStore, redis_store
    from alphapanda.runtime.bootstrap import build_core

    window_problem = time_window(args.start, args.end)
    if window_problem is not None:
        raise ConfigError(window_problem)
    if args.ticks is not None and args.instruments is not None:
        raise ConfigError(
            "--instruments picks simulated instruments: with --ticks, the file's ticks are all used"
        )
    settings = backtest_settings(args.broker, args.strategies)
    core = build_core(settings)
    events, total = tick_source(args, settings)
    show_progress = not args.no_progress and sys.stderr.isatty()
    if show_progress and total is None and args.ticks is not None and args.start is None and args.end is None:
        from alphapanda.runtime.tickfiles import count_tick_rows

        total = count_tick_rows(args.ticks)
    started = time.perf_counter()
    with _progress(total, enabled=show_progress) as advance:
        if args.state == "redis":
            with redis_store(settings.redis.url or None, settings.redis.claim_ttl_s) as store:
                result = Backtest(core, store, bar_seconds=args.bar).run(events, advance)
        else:
            result = Backtest(core, BacktestStateStore(), bar_seconds=args.bar).run(events, advance)
    elapsed = time.perf_counter() - started
    report = result.report
    if report.ticks == 0:
        where = "the --from/--to window selects none" if args.start or args.end else "the source has none"
        print(f"alphapanda: no ticks to backtest: {where}", file=sys.stderr)
        return 2
    print(f"backtest: broker={args.broker} state={args.state}")
    for line in report.summary_lines():
        print("  " + line)
    rate = report.ticks / elapsed if elapsed > 0 else 0.0
    # Wall-clock figures go to the terminal only: the JSON report must be the same on every run.
    print(f"  speed           {rate:,.0f} ticks/s ({elapsed:.2f} s)")
    if args.json is not None:
        args.json.write_text(report.dumps())
        print(f"report: {args.json}")
    if args.plot is not None:
        code = write_plot(report, args.plot)
        if code:
            return code
        print(f"plot: {args.plot}")
    return 0


def write_plot(report: Any, path: Path) -> int:
    from alphapanda.domain.report import plot_html, plot_svg

    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(plot_svg(report))
    elif suffix in (".html", ".htm"):
        path.write_text(plot_html(report))
    elif suffix == ".png":
        # Imported here: matplotlib is loaded only when a PNG is asked for.
        from alphapanda.runtime.plots import PlotError, write_png

        try:
            write_png(report, path)
        except PlotError as exc:
            print(f"alphapanda: --plot {path}: {exc}", file=sys.stderr)
            return 2
    else:  # the argument type allows only PLOT_SUFFIXES
        raise ValueError(f"--plot {path}: not one of {', '.join(PLOT_SUFFIXES)}")
    return 0


class _progress:
    """A rich progress bar on a terminal, nothing otherwise."""

    def __init__(self, total: int | None, *, enabled: bool, label: str = "backtest") -> None:
        self._enabled = enabled
        self._total = total
        self._label = label
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None] | None:
        if not self._enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn(self._label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
        )
        self._bar.start()
        task = self._bar.add_task("ticks", total=self._total)

        def advance(n: int) -> None:
            self._bar.advance(task, n)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# --- replay --------------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    from alphapanda.bus.kafka import EventPublisher
    from alphapanda.runtime.replay import ReplayError, check_replay_broker, replay
    from alphapanda.runtime.runinfo import resolve_endpoints, running_brokers

    try:
        check_replay_broker(args.broker)
    except (ReplayError, ValueError) as exc:
        raise ConfigError(str(exc) if isinstance(exc, ReplayError) else f"--broker: {exc}") from None
    try:
        start: datetime | int = int(args.start) if args.start.isdigit() else aware_time(args.start)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"--from: {exc} (or give a log offset, e.g. 0)") from None
    window_problem = time_window(start, args.end) if isinstance(start, datetime) else None
    if window_problem is not None:
        raise ConfigError(window_problem)
    settings = resolve_endpoints(load_settings())
    brokers = running_brokers() or settings.brokers
    if args.broker not in brokers:
        print(
            f"alphapanda: note: {args.broker} is not among the running brokers ({', '.join(brokers)}), "
            f"so nothing will trade the replay; run the pipeline with --brokers "
            f"{','.join([*brokers, args.broker])} and a strategy that lists {args.broker}",
            file=sys.stderr,
        )
    bootstrap = settings.kafka.bootstrap_servers
    publisher = EventPublisher(bootstrap, settings.kafka.ack_timeout_s)
    try:
        with _progress(None, enabled=sys.stderr.isatty(), label="replay") as progress:
            result = replay(
                bootstrap,
                publisher,
                topic=args.topic,
                start=start,
                broker=args.broker,
                end=args.end,
                progress=progress,
            )
    except ReplayError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        publisher.close()
    print(
        f"replayed {result.published:,} ticks from {args.topic} for broker {args.broker} "
        f"({result.read:,} records read, {result.skipped:,} skipped)"
    )
    return 0

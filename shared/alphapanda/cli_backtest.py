"""`alphapanda backtest` and `alphapanda replay`: the pipeline's handlers on recorded or simulated ticks.

`register(subparsers)` adds the commands; `run(args)` runs one of them, or returns None when
the command is not one of these (cli.py tries each command module in turn).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
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
from alphapanda.topics import ASSET_CLASSES, market_ticks

if TYPE_CHECKING:
    from alphapanda.domain.instruments import Instrument
    from alphapanda.runtime.backtest import BacktestResult
    from alphapanda.runtime.bootstrap import Core
    from alphapanda.runtime.tickfiles import TickRow
    from alphapanda.state.store import StateStore

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
        action="append",
        metavar="OUT",
        help="equity + drawdown plot: .png, .svg or .html; repeat it for several (--plot equity.png "
        "--plot equity.html)",
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
    rp.add_argument(
        "--topic",
        default=market_ticks("equity"),
        choices=[market_ticks(a) for a in ASSET_CLASSES],
        help="the ticks topic to read (default %(default)s)",
    )
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
    from alphapanda.topics import broker_kind, is_replay_broker

    if "," in broker:
        raise ConfigError(
            f"--broker {broker}: a backtest trades one paper broker: give one name (e.g. paper)"
        )
    try:
        kind = broker_kind(broker)
    except ValueError as exc:
        raise ConfigError(f"--broker {broker}: {exc}") from None
    if kind != "paper" or is_replay_broker(broker):
        # A replay broker's matcher takes only ticks `alphapanda replay` stamped for it: none here.
        raise ConfigError(f"--broker {broker}: a backtest trades a paper broker (paper, paper-2, ...)")
    if strategies is not None:
        check_strategies_file(strategies)
    overrides: dict[str, Any] = {"brokers": (broker,), **extra}
    if strategies is not None:
        overrides["strategies_file"] = strategies
    return load_settings(**overrides)


def check_strategies_file(path: Path) -> None:
    """Refuse, in one line, a strategies file that is not text, not YAML, or has no `strategies:` list
    (the entries themselves are checked when the strategies are built)."""
    from alphapanda.domain.strategy import StrategyConfigError
    from alphapanda.strategies import read_strategies_text, strategies_document

    try:
        strategies_document(read_strategies_text(path), str(path))
    except StrategyConfigError as exc:
        raise ConfigError(f"--strategies {exc}") from None


def check_broker_traded(core: Core, broker: str, strategies: Path | None) -> None:
    """Refuse a run in which no strategy trades `broker`: its report would be empty."""
    if any(broker in spec.brokers for spec in core.strategies):
        return
    origin = str(strategies) if strategies is not None else "the shipped strategies.yaml"
    listed = sorted({b for spec in core.strategies for b in spec.brokers})
    raise ConfigError(
        f"--broker {broker}: no strategy in {origin} trades on it (they list {', '.join(listed)}): "
        f"add {broker} to a strategy's brokers, or pick one of those"
    )


class FileTicks:
    """What passes in a tick file's rows: the first and last tick times and, in [start, end), the
    ticks of instruments the instrument list does not hold (no strategy can trade them) and the
    ticks that repeat their instrument's previous tick exactly (a file recorded twice?)."""

    def __init__(
        self, instruments: Iterable[Instrument], start: datetime | None = None, end: datetime | None = None
    ) -> None:
        self._known = {i.instrument_token: i.tradingsymbol for i in instruments}
        self._start, self._end = start, end
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.unknown: Counter[tuple[int, str]] = Counter()
        self.repeats = 0
        self.first_repeat: TickRow | None = None

    def watching(self, rows: Iterable[TickRow]) -> Iterator[TickRow]:
        known, unknown, start, end = self._known, self.unknown, self._start, self._end
        previous: dict[int, TickRow] = {}
        for row in rows:
            at = row.exchange_timestamp
            if self.first is None:
                self.first = at
            self.last = at
            if (start is None or at >= start) and (end is None or at < end):
                token = row.instrument_token
                if known.get(token) != row.tradingsymbol:
                    unknown[(token, row.tradingsymbol)] += 1
                before = previous.get(token)
                # Every field but the stream's counter (and no event): the same tick again.
                if before is not None and before.exchange_timestamp == at and before[:13] == row[:13]:
                    self.repeats += 1
                    self.first_repeat = self.first_repeat or row
                previous[token] = row
            yield row

    def repeat_note(self, path: Path) -> str | None:
        """One line on ticks given twice (each was traded as given), or None."""
        row = self.first_repeat
        if row is None:
            return None
        return (
            f"alphapanda: note: {self.repeats:,} ticks in {path} repeat their instrument's previous "
            f"tick exactly (the first: {row.instrument_token} {row.tradingsymbol} at "
            f"{row.exchange_timestamp.isoformat()}) and were traded again: if the file was recorded "
            "twice, remove the repeated lines"
        )

    def unknown_note(self, path: Path) -> str | None:
        """One line naming the instruments nobody could trade, or whose symbol is not the
        instrument list's for their token (traded by token), or None."""
        unknown = Counter({k: n for k, n in self.unknown.items() if k[0] not in self._known})
        renamed = Counter({k: n for k, n in self.unknown.items() if k[0] in self._known})
        parts = []
        if unknown:
            parts.append(
                f"{sum(unknown.values()):,} ticks in {path} are of instruments not in the instrument "
                f"list, so no strategy traded them: {_some(unknown)}"
            )
        if renamed:
            named = _some(renamed, lambda token, symbol: f"{token} {symbol}, listed as {self._known[token]}")
            parts.append(
                f"{sum(renamed.values()):,} ticks in {path} name another tradingsymbol than the "
                f"instrument list's for their token, and were traded as the token's: {named}"
            )
        if not parts:
            return None
        return (
            f"alphapanda: note: {'; '.join(parts)} (check the instrument_token and tradingsymbol "
            "columns, or set ALPHAPANDA_INSTRUMENTS_FILE)"
        )

    def empty_window(self, start: datetime | None, end: datetime | None) -> str:
        """Why the window [start, end) holds none of the file's ticks."""
        if self.first is None or self.last is None:
            return "the file has none"
        if end is not None and self.first >= end:
            return f"the file starts at {self.first.isoformat()}, not before --to {end.isoformat()}"
        if start is not None and self.last < start:
            return f"the file ends at {self.last.isoformat()}, before --from {start.isoformat()}"
        return "the --from/--to window selects none"


def _some(counts: Counter[tuple[int, str]], show: Callable[[int, str], str] = lambda t, s: f"{t} {s}") -> str:
    """The most frequent (token, symbol) pairs of `counts`, and how many more."""
    named = [show(token, symbol) for (token, symbol), _ in counts.most_common(5)]
    if len(counts) > len(named):
        named.append(f"and {len(counts) - len(named)} more")
    return ", ".join(named)


def tick_source(
    args: argparse.Namespace, settings: Settings, watch: FileTicks | None = None
) -> tuple[Iterator[Event] | Iterator[TickRow], int | None]:
    """The run's ticks, and how many there will be if known: a tick file as validated rows (the
    backtest turns the few that cause events into events), simulated ticks as stamped events.
    `watch` sees the file's rows as they pass, before the --from/--to cut."""
    from alphapanda.runtime.backtest import between, between_rows
    from alphapanda.runtime.bootstrap import build_core
    from alphapanda.runtime.feed import fixed_simulation
    from alphapanda.runtime.tickfiles import check_time_order, read_tick_rows

    windowed = args.start is not None or args.end is not None
    if args.ticks is not None:
        if args.end is not None:
            check_time_order(args.ticks)  # the run stops reading where time passes --to
        rows: Iterator[TickRow] = read_tick_rows(args.ticks)
        if watch is not None:
            rows = watch.watching(rows)
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

    from alphapanda.runtime.backtest import Backtest, BacktestStateStore
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
    check_broker_traded(core, args.broker, args.strategies)
    watch = FileTicks(core.instruments, args.start, args.end) if args.ticks is not None else None
    events, total = tick_source(args, settings, watch)
    show_progress = not args.no_progress and sys.stderr.isatty()
    if show_progress and total is None and args.ticks is not None and args.start is None and args.end is None:
        from alphapanda.runtime.tickfiles import count_tick_rows

        total = count_tick_rows(args.ticks)
    with contextlib.ExitStack() as stack:
        store = _redis_store(stack, settings) if args.state == "redis" else BacktestStateStore()
        started = time.perf_counter()
        with _progress(total, enabled=show_progress) as advance:
            result = Backtest(core, store, bar_seconds=args.bar).run(events, advance)
        elapsed = time.perf_counter() - started
    report = result.report
    if report.ticks == 0:
        if watch is not None and (args.start or args.end):
            where = watch.empty_window(args.start, args.end)
        else:
            where = "the --from/--to window selects none" if args.start or args.end else "the source has none"
        print(f"alphapanda: no ticks to backtest: {where}", file=sys.stderr)
        return 2
    print(f"backtest: broker={args.broker} state={args.state}")
    for line in report.summary_lines():
        print("  " + line)
    rate = report.ticks / elapsed if elapsed > 0 else 0.0
    # Wall-clock figures go to the terminal only: the JSON report must be the same on every run.
    print(f"  speed           {rate:,.0f} ticks/s ({elapsed:.2f} s)")
    for warning in strategy_failure_notes(result):
        print(warning, file=sys.stderr)
    if watch is not None:
        for note in (watch.unknown_note(args.ticks), watch.repeat_note(args.ticks)):
            if note is not None:
                print(note, file=sys.stderr)
    if args.json is not None:
        args.json.write_text(report.dumps())
        print(f"report: {args.json}")
    code = 0
    for path in dict.fromkeys(args.plot or ()):
        # Each is written even if one before it failed (a PNG without matplotlib).
        failed = write_plot(report, path)
        if failed:
            code = failed
        else:
            print(f"plot: {path}")
    return code


def strategy_failure_notes(result: BacktestResult) -> list[str]:
    """One line per strategy of the user's own that failed on some ticks: how many, and the
    first failure's alert.

    The run goes on without it on those ticks (as the pipeline does), so this is how a backtest
    shows the bug, with the exact count its thinned-out alerts do not give."""
    from alphapanda.events import Alert

    firsts: dict[str, str] = {}
    for event in result.alerts:
        alert = event.data
        if isinstance(alert, Alert) and alert.kind == "strategy_error":
            firsts.setdefault(alert.details["strategy"], alert.message)
    return [
        f"warning: strategy {name!r} failed on {count:,} tick{'s' if count != 1 else ''} and "
        f"sent nothing on them; the first: {firsts.get(name, '(no alert: it trades on no broker here)')}"
        for name, count in sorted(result.strategy_failures.items())
    ]


def _redis_store(stack: contextlib.ExitStack, settings: Settings) -> StateStore:
    """The `--state redis` store, entered on `stack`; a Redis that cannot be used is one line."""
    import redis

    from alphapanda.runtime.backtest import BacktestError, redis_store

    url = settings.redis.url or None
    where = f"ALPHAPANDA_REDIS__URL {url}" if url else "the embedded redis-server"
    try:
        store: StateStore = stack.enter_context(redis_store(url, settings.redis.claim_ttl_s))
    except BacktestError as exc:
        raise ConfigError(f"--state redis: {exc}") from None
    except redis.exceptions.RedisError as exc:
        raise ConfigError(
            f"--state redis: cannot use {where}: {exc} (start that Redis, unset ALPHAPANDA_REDIS__URL "
            "for an embedded one, or use --state memory)"
        ) from None
    except ValueError as exc:  # redis-py's word on a URL it cannot parse
        raise ConfigError(f"--state redis: {where} is not a Redis URL: {exc}") from None
    return store


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
    from alphapanda.runtime.replay import ReplayError, check_replay_broker, invalid_note, replay
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
    # Silent librdkafka: `replay` reports an unreachable or vanishing broker itself, in one line;
    # the client's own "Connect ... failed" would repeat it every half second until then.
    publisher = EventPublisher(bootstrap, settings.kafka.ack_timeout_s, log_level=0)
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
    note = invalid_note(result, args.topic)
    if note is not None:
        print(f"alphapanda: note: {note}", file=sys.stderr)
    return 0

"""The `alphapanda` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alphapanda import cli_backtest, cli_bench, cli_trace, cli_zerodha
from alphapanda.brokers.factory import TraderUnavailable
from alphapanda.brokers.zerodha.session import SessionError
from alphapanda.cli_args import (
    aware_time,
    broker_name,
    check_tick_file,
    existing_file,
    non_negative_number,
    output_file,
    port,
    positive_number,
    whole_number,
)
from alphapanda.config import ConfigError, Settings, first_instruments, load_settings
from alphapanda.domain.instruments import InstrumentFileError
from alphapanda.domain.strategy import StrategyConfigError
from alphapanda.feed import TickFileError


class _CommandParser(argparse.ArgumentParser):
    """A command's parser, which reports an argument it does not know with its own usage.

    argparse hands a subcommand's unknown arguments back up to the top-level parser, whose
    error shows only the list of commands; the command's own usage says what it does take.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alphapanda", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    run = sub.add_parser(
        "run",
        help="run the whole pipeline locally (embedded Kafka and Redis unless configured)",
        description="Start the embedded broker and Redis (or use ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS and "
        "ALPHAPANDA_REDIS__URL), a simulated NSE feed and the pipeline for each broker.",
    )
    run.add_argument("--brokers", help="comma list of brokers (default: paper, or ALPHAPANDA_BROKERS)")
    run.add_argument("--instruments", type=whole_number, help="simulate only the first N instruments")
    run.add_argument(
        "--rate", type=non_negative_number, default=200.0, help="ticks per second (0: as fast as possible)"
    )
    run.add_argument("--seed", type=int, default=7, help="simulator seed")
    run.add_argument("--strategies", type=existing_file, help="strategies YAML file")
    run.add_argument("--duration", type=positive_number, help="stop after this many seconds")
    # Checked in `_run_pipeline` (check_tick_file): one line naming what is wrong, not argparse's usage.
    run.add_argument("--replay", type=Path, help="replay this CSV tick file instead of simulating")
    run.add_argument("--no-live", action="store_true", help="no live table (for logs and CI)")
    run.add_argument(
        "--kite-sandbox",
        action="store_true",
        help="trade zerodha against a local Kite sandbox (started, logged in and stopped by the run) "
        "and take the market feed from its ticker",
    )
    run.add_argument(
        "--metrics-port", type=port, help="serve Prometheus metrics on this port (0 picks a free one)"
    )
    run.add_argument(
        "--api-port",
        type=port,
        help="serve the read API (GET /brokers, /brokers/B/positions, ...) on 127.0.0.1 at this port "
        "(0 picks a free one)",
    )

    feed = sub.add_parser(
        "feed",
        help="publish simulated (or replayed) ticks to the configured Kafka until stopped",
        description="The market feed as a long-running process (a Kubernetes Deployment). Needs "
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS.",
    )
    feed.add_argument(
        "--rate", type=non_negative_number, default=200.0, help="ticks per second (0: as fast as possible)"
    )
    feed.add_argument("--seed", type=int, default=7)
    feed.add_argument("--instruments", type=whole_number, help="only the first N instruments")
    feed.add_argument("--replay", type=existing_file, help="replay this CSV tick file, then stop")
    feed.add_argument(
        "--source",
        choices=("simulator", "kite"),
        default="simulator",
        help="simulate ticks, or stream the instruments from KiteTicker (needs `alphapanda login`)",
    )

    halt = sub.add_parser(
        "halt",
        help="stop a broker trading (kill switch), optionally closing every open position",
        description="Set the broker's kill switch to HALTED: risk rejects every new signal. With --flatten, "
        "a closing signal for every open position goes through the normal pipeline (risk still applies). "
        "Reaches the running `alphapanda run`, or the servers named by ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS "
        "and ALPHAPANDA_REDIS__URL.",
    )
    halt.add_argument("--broker", type=broker_name, required=True, help="the broker to halt, e.g. paper")
    halt.add_argument("--flatten", action="store_true", help="also close every open position")
    halt.add_argument(
        "--reducing", action="store_true", help="REDUCING instead: only position-reducing signals pass"
    )
    resume = sub.add_parser("resume", help="let a halted or reducing broker trade again (kill switch ACTIVE)")
    resume.add_argument("--broker", type=broker_name, required=True)
    reconcile = sub.add_parser(
        "reconcile", help="check that the broker's positions equal the sum of the fills on its topic"
    )
    reconcile.add_argument("--broker", type=broker_name, required=True)

    cli_trace.register(sub)
    cli_zerodha.register(sub)
    cli_backtest.register(sub)
    cli_bench.register(sub)

    sim = sub.add_parser(
        "simulate", help="write simulated ticks to a CSV tick file (replay it with run --replay)"
    )
    sim.add_argument("--ticks", type=whole_number, required=True, help="how many ticks")
    sim.add_argument("--out", type=output_file(".csv"), required=True, help="CSV file to write")
    sim.add_argument("--instruments", type=whole_number, help="only the first N instruments")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument(
        "--start",
        type=aware_time,
        default=aware_time("2026-01-05T09:15:00+05:30"),
        help="market time of the first tick (ISO 8601, with its zone)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for run_command in (cli_trace.run, cli_backtest.run, cli_bench.run):
            code: int | None = run_command(args)
            if code is not None:
                return code
        if args.command != "reconcile":
            zerodha = cli_zerodha.run(args)
            if zerodha is not None:
                return zerodha
        if args.command == "run":
            return _run(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "feed":
            return _feed(args)
        if args.command in ("halt", "resume"):
            return _kill_switch(args)
        if args.command == "reconcile":
            return _reconcile(args)
    except (
        ConfigError,
        StrategyConfigError,
        InstrumentFileError,
        TickFileError,
        TraderUnavailable,
        SessionError,
    ) as exc:
        print(f"alphapanda: {exc}", file=sys.stderr)
        return 2
    return 2


def _run(args: argparse.Namespace) -> int:
    try:
        return _run_pipeline(args)
    except KeyboardInterrupt:
        # Ctrl-C while the runner does not handle it (before it took the signal over, or after it
        # gave it back): there is nothing of the run left to stop.
        print("alphapanda: interrupted", file=sys.stderr)
        return 130


def _run_pipeline(args: argparse.Namespace) -> int:
    from alphapanda.runtime.local import RunFailed, RunOptions, run_local

    overrides: dict[str, Any] = {}
    if args.brokers is not None:
        overrides["brokers"] = args.brokers
    if args.strategies is not None:
        overrides["strategies_file"] = args.strategies
    settings = load_settings(**overrides)
    if args.kite_sandbox:
        from alphapanda.topics import zerodha_brokers

        if not zerodha_brokers(settings.brokers):
            raise ConfigError(
                "--kite-sandbox trades the zerodha broker: add it, e.g. --brokers paper,zerodha"
            )
        if args.replay is not None:
            raise ConfigError("--kite-sandbox takes its ticks from the sandbox: it cannot replay a file")
    if args.replay is not None:
        check_tick_file(args.replay)
    if args.metrics_port is not None:
        from alphapanda.metrics import start_metrics_server

        port = start_metrics_server(args.metrics_port)
        print(f"Prometheus metrics on http://127.0.0.1:{port}/metrics")
    options = RunOptions(
        rate=args.rate,
        seed=args.seed,
        instruments=args.instruments,
        duration=args.duration,
        replay=args.replay,
        live_view=not args.no_live,
        kite_sandbox=args.kite_sandbox,
        api_port=args.api_port,
    )
    try:
        run_local(settings, options)
    except RunFailed as exc:
        # The summary is printed; what stopped the run is one line, not a traceback.
        print(f"alphapanda: {exc}", file=sys.stderr)
        return 1
    return 0


def _feed(args: argparse.Namespace) -> int:
    from alphapanda.bus.kafka import EventPublisher, ensure_topics
    from alphapanda.domain.instruments import load_instruments
    from alphapanda.feed import read_ticks_csv
    from alphapanda.runtime.feed import FeedPublisher, live_simulation
    from alphapanda.topics import ASSET_CLASSES, dlq, market_ticks

    settings = load_settings()
    bootstrap = settings.kafka.bootstrap_servers
    if not bootstrap:
        raise ConfigError("alphapanda feed needs ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS (e.g. kafka:9092)")
    market = [market_ticks(a) for a in ASSET_CLASSES]
    ensure_topics(bootstrap, market + [dlq(t) for t in market], settings.kafka.partitions)
    instruments = first_instruments(load_instruments(settings.instruments_file), args.instruments)
    if args.source == "kite":
        from alphapanda.brokers.zerodha.ticker_feed import run_kite_feed

        run_kite_feed(settings, instruments=instruments)
        return 0
    ticks = read_ticks_csv(args.replay) if args.replay else live_simulation(instruments, args.seed)
    publisher = EventPublisher(bootstrap, settings.kafka.ack_timeout_s)
    feeder = FeedPublisher(ticks, publisher, args.rate)
    feeder.start()
    try:
        while not feeder.finished.wait(10):
            print(f"published {feeder.published:,} ticks", flush=True)
    except KeyboardInterrupt:
        feeder.stop()
        feeder.join(10)
    publisher.close()
    print(f"published {feeder.published:,} ticks")
    if feeder.failed is not None:
        print(f"alphapanda: the feed failed: {feeder.failed}", file=sys.stderr)
        return 1
    return 0


def _operator_settings(broker: str) -> Settings:
    from alphapanda.runtime.runinfo import resolve_endpoints
    from alphapanda.topics import validate_broker_name

    try:
        validate_broker_name(broker)
    except ValueError as exc:
        raise ConfigError(f"--broker: {exc}") from None
    return resolve_endpoints(load_settings())


def _kill_switch(args: argparse.Namespace) -> int:
    from alphapanda.domain.instruments import load_instruments
    from alphapanda.domain.risk import BrokerState
    from alphapanda.runtime.bootstrap import connect
    from alphapanda.runtime.operations import flatten_signals, set_broker_state

    settings = _operator_settings(args.broker)
    store, publisher = connect(settings)
    if args.command == "resume":
        old = set_broker_state(store, publisher, args.broker, BrokerState.ACTIVE, "resumed by the operator")
        print(f"{args.broker}: {old.value} -> ACTIVE")
        publisher.close()
        return 0
    state = BrokerState.REDUCING if args.reducing else BrokerState.HALTED
    old = set_broker_state(store, publisher, args.broker, state, "set by the operator")
    print(f"{args.broker}: {old.value} -> {state.value}")
    if args.flatten:
        instruments = {i.instrument_token: i for i in load_instruments(settings.instruments_file)}
        closing = flatten_signals(store, args.broker, instruments=instruments)
        publisher.publish(closing)
        print(f"sent {len(closing)} closing signals through the pipeline (risk still applies)")
    publisher.close()
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from alphapanda.runtime.bootstrap import connect
    from alphapanda.runtime.operations import reconcile

    settings = _operator_settings(args.broker)
    store, publisher = connect(settings)
    publisher.close()
    result = reconcile(store, settings.kafka.bootstrap_servers, args.broker)
    print(
        f"{args.broker}: {result.fills} fills on the topic ({result.duplicates} redelivered copies ignored), "
        f"{result.positions} open positions in the portfolio"
    )
    for b in result.breaks:
        print(
            f"  BREAK {b.strategy} {b.instrument_token}: "
            f"fills say {b.from_fills}, portfolio says {b.in_portfolio}"
        )
    print("positions equal the sum of fills" if result.ok else f"{len(result.breaks)} positions do not match")
    code = 0 if result.ok else 1
    # A live broker is also compared with the venue's own positions.
    venue = cli_zerodha.run(args)
    return max(code, venue or 0)


def _simulate(args: argparse.Namespace) -> int:
    from alphapanda.domain.instruments import load_instruments
    from alphapanda.feed import write_ticks_csv
    from alphapanda.runtime.feed import fixed_simulation

    settings = load_settings()
    instruments = first_instruments(load_instruments(settings.instruments_file), args.instruments)
    n = write_ticks_csv(args.out, fixed_simulation(instruments, args.seed, args.start, args.ticks))
    print(f"wrote {n} ticks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

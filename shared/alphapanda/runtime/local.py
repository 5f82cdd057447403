"""`alphapanda run`: the whole pipeline on one machine, with a live terminal view."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from alphapanda.bus.dispatcher import Dispatcher
from alphapanda.bus.kafka import EventPublisher
from alphapanda.config import Settings, first_instruments
from alphapanda.domain.calendar import load_trading_calendar
from alphapanda.events import EventType, now
from alphapanda.runtime.bootstrap import Core, build_core, connect, infrastructure
from alphapanda.runtime.feed import (
    Feed,
    FeedPlan,
    FeedProcess,
    FeedPublisher,
    session_start_for_simulation,
)
from alphapanda.runtime.marks import mark_to_market
from alphapanda.runtime.reports import BrokerSummary, broker_summary
from alphapanda.runtime.runinfo import remove_runinfo, write_runinfo
from alphapanda.state.store import RedisStateStore, StateStore
from alphapanda.topics import Function, bindings, broker_kind

if TYPE_CHECKING:
    from alphapanda.brokers.zerodha.reconcile import PeriodicReconciler

MARK_INTERVAL_S = 5.0
"""How often open positions are marked to market (PnL snapshots, today's PnL for the loss limit)."""


@dataclass(frozen=True)
class RunOptions:
    rate: float = 200.0
    seed: int = 7
    instruments: int | None = None
    duration: float | None = None
    replay: Path | None = None
    live_view: bool = True
    kite_sandbox: bool = False
    """Trade zerodha against a local Kite sandbox and take the market feed from its ticker."""


@dataclass(frozen=True)
class RunTotals:
    ticks: int
    signals: int
    validated: int
    rejected: int
    orders: int
    fills: int
    cancelled: int
    failed: int
    dead_lettered: int
    brokers: tuple[BrokerSummary, ...]
    per_broker: tuple[BrokerCounts, ...]

    def line(self) -> str:
        return (
            f"summary: ticks={self.ticks} signals={self.signals} validated={self.validated} "
            f"rejected={self.rejected} orders={self.orders} fills={self.fills} cancelled={self.cancelled} "
            f"failed={self.failed} "
            f"dead_lettered={self.dead_lettered}"
        )

    def broker_lines(self) -> list[str]:
        """One parseable line per broker: `broker NAME: signals=… orders=… fills=…`."""
        return [
            f"broker {b.broker}: signals={c.signals} validated={c.validated} rejected={c.rejected} "
            f"orders={c.orders} fills={c.fills} cancelled={c.cancelled}"
            for b, c in zip(self.brokers, self.per_broker, strict=True)
        ]


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop()


def run_local(settings: Settings, options: RunOptions, console: Console | None = None) -> RunTotals:
    """Start everything, run until the duration ends, the replay is done or Ctrl-C; then stop it all."""
    console = console or Console()
    if options.kite_sandbox:
        from alphapanda.runtime.sandboxed import sandbox_settings

        settings = sandbox_settings(settings)
    core = build_core(settings)
    instruments = first_instruments(core.instruments, options.instruments)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with infrastructure(settings) as settings, contextlib.ExitStack() as extras:
            console.print(
                f"[bold]alphapanda[/] kafka {settings.kafka.bootstrap_servers}  redis {settings.redis.url}  "
                f"brokers {','.join(settings.brokers)}  instruments {len(instruments)}"
            )
            store, publisher = connect(settings)
            write_runinfo(settings)
            dispatcher = Dispatcher(
                bindings(list(settings.brokers)),
                core.stage_for,
                store,
                publisher,
                settings.kafka,
                settings.delivery,
            )
            dispatcher.start()
            market_start = session_start_for_simulation(load_trading_calendar(), now())
            if not options.replay:
                source = "Kite sandbox" if options.kite_sandbox else "simulated NSE"
                console.print(f"{source} market clock starts at {market_start:%Y-%m-%d %H:%M:%S %Z}")
            feed: Feed
            if options.kite_sandbox:
                from alphapanda.runtime.sandboxed import kite_sandbox

                sandboxed = extras.enter_context(
                    kite_sandbox(
                        settings, instruments, seed=options.seed, rate=options.rate, market_start=market_start
                    )
                )
                console.print(f"Kite sandbox {sandboxed.sandbox.root}  ticker {sandboxed.sandbox.ws_root}")
                # The ticks arrive on a KiteTicker connection of this process.
                feed = FeedPublisher(sandboxed.ticks, publisher, options.rate)
            else:
                # A simulated or replayed feed runs in a process of its own, as deployed: making
                # and encoding ticks would otherwise take the GIL from the stages.
                feed = FeedProcess(
                    FeedPlan(
                        settings.kafka.bootstrap_servers,
                        settings.kafka.ack_timeout_s,
                        options.rate,
                        tuple(instruments),
                        options.seed,
                        market_start,
                        replay=options.replay,
                    )
                )
            reconcilers = _reconcilers(settings, core, publisher, console)
            started = time.monotonic()
            feed.start()
            try:
                _watch(core, dispatcher, feed, store, publisher, options, started, console, reconcilers)
            except (KeyboardInterrupt, _Stop):
                console.print("stopping…")
            finally:
                feed.stop()
                feed.join(10)
                drained = dispatcher.wait_idle(timeout_s=15)
                dispatcher.stop()
                publisher.close()
            totals = _totals(core, dispatcher, feed, store)
            _print_summary(console, totals, time.monotonic() - started, drained)
            if feed.failed is not None:
                raise RuntimeError(f"market feed failed: {feed.failed}") from feed.failed
            return totals
    finally:
        remove_runinfo()
        signal.signal(signal.SIGTERM, previous)


def _reconcilers(
    settings: Settings, core: Core, publisher: EventPublisher, console: Console
) -> list[PeriodicReconciler]:
    """Zerodha brokers' books against kite.positions(), at start and every reconcile interval."""
    if not any(broker_kind(b) == "zerodha" for b in settings.brokers):
        return []
    from alphapanda.brokers.zerodha.reconcile import live_reconcilers

    names = {i.instrument_token: (i.tradingsymbol, i.exchange) for i in core.instruments}
    return live_reconcilers(
        settings.brokers,
        settings.kite,
        settings.redis.url,
        settings.redis.claim_ttl_s,
        publisher.publish,
        names=lambda token: names.get(token, ("", "")),
        report=console.print,
    )


def _watch(
    core: Core,
    dispatcher: Dispatcher,
    feed: Feed,
    store: RedisStateStore,
    publisher: EventPublisher,
    options: RunOptions,
    started: float,
    console: Console,
    reconcilers: Sequence[PeriodicReconciler] = (),
) -> None:
    last_ticks, last_time = 0, started
    last_mark = started
    rate = 0.0
    with Live(console=console, refresh_per_second=4, transient=False, auto_refresh=False) as live:
        while True:
            dispatcher.check()
            now = time.monotonic()
            if now - last_time >= 1.0:
                rate = (feed.published - last_ticks) / (now - last_time)
                last_ticks, last_time = feed.published, now
            for reconciler in reconcilers:
                reconciler.maybe_run(now)
            if now - last_mark >= MARK_INTERVAL_S:
                for broker in core.brokers:
                    mark_to_market(store, publisher, broker)
                last_mark = now
            if options.live_view:
                live.update(_view(core, dispatcher, feed, store, rate, now - started), refresh=True)
            if options.duration is not None and now - started >= options.duration:
                return
            if feed.finished.is_set() and dispatcher.wait_idle(timeout_s=1.0, quiet_s=0.5):
                return
            time.sleep(0.25)


_ORDER_STAGES = (Function.TRADING_ENGINE, Function.ORDER_MATCHER)
"""Orders are placed by the trading engine; resting ones fill (or expire) in the order matcher."""


def _count(
    dispatcher: Dispatcher,
    functions: tuple[Function, ...],
    event_type: EventType,
    broker: str | None = None,
) -> int:
    return sum(
        w.stats.by_type[event_type.value]
        for w in dispatcher.workers
        if w.binding.function in functions and (broker is None or w.binding.broker == broker)
    )


@dataclass(frozen=True)
class BrokerCounts:
    signals: int
    validated: int
    rejected: int
    orders: int
    fills: int
    cancelled: int


def _fills(dispatcher: Dispatcher, broker: str | None) -> int:
    """Fills the order stages made, plus those of live brokers: their fills come from the venue
    (order updates), outside the dispatcher, so they are counted where the portfolio took them in."""
    made = _count(dispatcher, _ORDER_STAGES, EventType.ORDER_FILLED, broker)
    live = sum(
        w.stats.consumed
        for w in dispatcher.workers
        if w.binding.function is Function.PORTFOLIO_MANAGER
        and w.binding.broker is not None
        and broker_kind(w.binding.broker) != "paper"
        and (broker is None or w.binding.broker == broker)
    )
    return made + live


def _broker_counts(dispatcher: Dispatcher, broker: str | None) -> BrokerCounts:
    risk = (Function.RISK_MANAGER,)
    return BrokerCounts(
        signals=_count(dispatcher, (Function.STRATEGY_RUNNER,), EventType.SIGNAL_RAW)
        if broker is None
        else sum(
            w.stats.consumed
            for w in dispatcher.workers
            if w.binding.function is Function.RISK_MANAGER and w.binding.broker == broker
        ),
        validated=_count(dispatcher, risk, EventType.SIGNAL_VALIDATED, broker),
        rejected=_count(dispatcher, risk, EventType.SIGNAL_REJECTED, broker),
        orders=_count(dispatcher, _ORDER_STAGES, EventType.ORDER_SUBMITTED, broker),
        fills=_fills(dispatcher, broker),
        cancelled=_count(dispatcher, _ORDER_STAGES, EventType.ORDER_CANCELLED, broker),
    )


def _totals(core: Core, dispatcher: Dispatcher, feed: Feed, store: StateStore) -> RunTotals:
    counts = _broker_counts(dispatcher, None)
    return RunTotals(
        ticks=feed.published,
        signals=counts.signals,
        validated=counts.validated,
        rejected=counts.rejected,
        orders=counts.orders,
        fills=counts.fills,
        cancelled=counts.cancelled,
        failed=_count(dispatcher, _ORDER_STAGES, EventType.ORDER_FAILED),
        dead_lettered=sum(w.stats.dead_lettered for w in dispatcher.workers),
        brokers=tuple(broker_summary(store, b) for b in core.brokers),
        per_broker=tuple(_broker_counts(dispatcher, b) for b in core.brokers),
    )


def _view(
    core: Core, dispatcher: Dispatcher, feed: Feed, store: StateStore, rate: float, elapsed: float
) -> Group:
    stages = Table(title=f"alphapanda run · {elapsed:,.0f}s · {rate:,.0f} ticks/s", expand=False)
    for col in ("stage", "broker", "in", "out", "dlq", "retries", "lag"):
        stages.add_column(col, justify="right" if col not in ("stage", "broker") else "left")
    stages.add_row("market_feed", "shared", "", f"{feed.published:,}", "", "", "")
    for w in dispatcher.workers:
        s = w.stats
        stages.add_row(
            w.binding.function.value,
            w.binding.broker or "shared",
            f"{s.consumed:,}",
            f"{s.emitted:,}",
            str(s.dead_lettered),
            str(s.retries),
            str(s.lag),
        )
    totals = _totals(core, dispatcher, feed, store)
    return Group(stages, _broker_table(totals))


def _broker_table(totals: RunTotals) -> Table:
    table = Table(title="per broker", expand=False)
    for col in (
        "broker",
        "signals",
        "validated",
        "rejected",
        "orders",
        "fills",
        "open pos",
        "realised",
        "unrealised",
        "charges",
    ):
        table.add_column(col, justify="right" if col != "broker" else "left")
    for b, c in zip(totals.brokers, totals.per_broker, strict=True):
        table.add_row(
            b.broker,
            f"{c.signals:,}",
            f"{c.validated:,}",
            f"{c.rejected:,}",
            f"{c.orders:,}",
            f"{c.fills:,}",
            str(b.open_positions),
            f"{b.realised_pnl:,.2f}",
            f"{b.unrealised_pnl:,.2f}",
            f"{b.charges:,.2f}",
        )
    return table


def _print_summary(console: Console, totals: RunTotals, elapsed: float, drained: bool) -> None:
    console.print(_broker_table(totals))
    if not drained:
        console.print(
            "[yellow]the pipeline had not drained when it was stopped; the rest stays on the topics[/]"
        )
    console.print(f"ran {elapsed:,.1f}s; {totals.ticks / max(elapsed, 1e-9):,.0f} ticks/s on average")
    # Plain print: unwrapped lines that scripts and tests can parse.
    for line in totals.broker_lines():
        print(line, flush=True)
    print(totals.line(), flush=True)

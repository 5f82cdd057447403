"""`alphapanda run`: the whole pipeline on one machine, with a live terminal view."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from alphapanda.bus.dispatcher import Dispatcher
from alphapanda.bus.kafka import EventPublisher
from alphapanda.config import ConfigError, Settings, first_instruments
from alphapanda.domain.calendar import load_trading_calendar
from alphapanda.events import EventType, now
from alphapanda.runtime.api import PendingReadApi, ReadApi, kite_login, serve_read_api
from alphapanda.runtime.bootstrap import Core, build_core, connect, start_infrastructure
from alphapanda.runtime.feed import (
    Feed,
    FeedPlan,
    FeedProcess,
    FeedPublisher,
    session_start_for_simulation,
)
from alphapanda.runtime.marks import mark_to_market
from alphapanda.runtime.reports import BrokerSummary, broker_summary
from alphapanda.runtime.runinfo import claim_runinfo, publish_runinfo, remove_runinfo
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
    api_port: int | None = None
    """Serve the read API (`runtime.api`) on this loopback port (0: a free one); None: not at all."""


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
    alerts: int
    """Alerts raised while it ran: by the stages (a strategy of the user's own failing) and by
    the Zerodha reconciliation."""
    brokers: tuple[BrokerSummary, ...]
    per_broker: tuple[BrokerCounts, ...]

    def line(self) -> str:
        return (
            f"summary: ticks={self.ticks} signals={self.signals} validated={self.validated} "
            f"rejected={self.rejected} orders={self.orders} fills={self.fills} cancelled={self.cancelled} "
            f"failed={self.failed} "
            f"dead_lettered={self.dead_lettered} alerts={self.alerts}"
        )

    def broker_lines(self) -> list[str]:
        """One parseable line per broker: `broker NAME: signals=… orders=… fills=…`."""
        return [
            f"broker {b.broker}: signals={c.signals} validated={c.validated} rejected={c.rejected} "
            f"orders={c.orders} fills={c.fills} cancelled={c.cancelled}"
            for b, c in zip(self.brokers, self.per_broker, strict=True)
        ]


class RunFailed(RuntimeError):
    """The run stopped because something it depends on failed; the message is one line."""


class _Stop(BaseException):
    """Raised in the main thread by the first SIGTERM or SIGINT, to stop the run.

    A BaseException, not an Exception: start-up waits on servers in loops with broad
    `except Exception` handlers (the broker's health check), which would swallow it and go on
    starting as if no one had asked to stop.
    """

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


class _StopSignals:
    """SIGTERM and SIGINT while the runner runs: the first raises `_Stop` where the main thread
    is; once shutdown has begun, a signal (a second Ctrl-C) instead sets `hurry`, which cuts the
    drain short: raising again there would break off the shutdown half way, child servers and all."""

    def __init__(self) -> None:
        self.shutting_down = False
        self.hurry = threading.Event()
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> _StopSignals:
        # Handlers can only be set from the main thread (an embedding caller may run us elsewhere).
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self.shutting_down:
            self.shutting_down = True
            raise _Stop(name)
        if not self.hurry.is_set():
            self.hurry.set()
            # os.write, not print: a signal handler may interrupt a print to the same stream.
            os.write(2, f"{name} again: stopping now, without waiting for the pipeline to drain\n".encode())


class _Server(Protocol):
    """An embedded server the runner started (runtime.embedded), watched while it runs."""

    label: str

    @property
    def pid(self) -> int | None: ...

    def exit_code(self) -> int | None: ...


def _check_servers(servers: Sequence[_Server]) -> None:
    """Raise `RunFailed` if an embedded server has exited: the pipeline cannot go on without it,
    and its consumers would otherwise retry against a closed port for ever."""
    for server in servers:
        code = server.exit_code()
        if code is not None:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            raise RunFailed(
                f"the {server.label} (pid {server.pid}) {how} during the run; the run stopped "
                f"(start it again; its state is lost)"
            )


REACH_TIMEOUT_S = 5.0
"""How long a configured Kafka or Redis may take to answer at start before the run gives up."""


def _check_reachable(settings: Settings) -> None:
    """Fail fast, in one line, on a Kafka or Redis the user named that does not answer: unchecked,
    Redis fails in a traceback and Kafka only after the topic admin's 15 s timeout."""
    if settings.redis.url:
        client = redis.Redis.from_url(
            settings.redis.url, socket_connect_timeout=REACH_TIMEOUT_S, socket_timeout=REACH_TIMEOUT_S
        )
        try:
            client.ping()
        except redis.RedisError as exc:
            reason = " ".join(str(exc).split())
            raise ConfigError(
                f"ALPHAPANDA_REDIS__URL={settings.redis.url} does not answer ({reason}): start that Redis, "
                f"correct the URL, or unset ALPHAPANDA_REDIS__URL to run an embedded redis-server"
            ) from None
        finally:
            client.close()
    if settings.kafka.bootstrap_servers:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        # log_level 0: librdkafka would otherwise print a line per failed connect on stderr.
        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers, "log_level": 0})
        try:
            admin.list_topics(timeout=REACH_TIMEOUT_S)
        except KafkaException as exc:
            reason = exc.args[0].str() if exc.args else str(exc)
            raise ConfigError(
                f"ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS={settings.kafka.bootstrap_servers} does not answer "
                f"within {REACH_TIMEOUT_S:g}s ({reason}): start that Kafka, correct the address, or unset "
                f"ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS to run the embedded broker"
            ) from None


def _empty_totals() -> RunTotals:
    """The totals of a run stopped before its pipeline started: nothing happened."""
    return RunTotals(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, brokers=(), per_broker=())


def run_local(settings: Settings, options: RunOptions, console: Console | None = None) -> RunTotals:
    """Start everything, run until the duration ends, the replay is done or Ctrl-C; then stop it all.

    Raises `ConfigError` for a setting that keeps the run from starting (an unreachable Kafka or
    Redis, another run on the same run-info file), `RunFailed` when a server or the feed fails.
    """
    if console is None:
        console = Console()
        if not console.is_terminal:
            # Rich lays out for 80 columns when it does not write to a terminal (a log, CI):
            # too narrow for the per-broker table, whose figures it would cut to "-154…".
            console = Console(width=max(console.width, 160))
    with _StopSignals() as signals:
        try:
            return _run_local(settings, options, console, signals)
        except _Stop as stop:
            # Stopped before the pipeline ran: whatever had started has been stopped on the way
            # out (servers by their context managers), so there is only the summary to give.
            console.print(f"stopped by {stop.signame} during start-up")
            totals = _empty_totals()
            print(totals.line(), flush=True)
            return totals
        finally:
            remove_runinfo()


def _run_local(settings: Settings, options: RunOptions, console: Console, signals: _StopSignals) -> RunTotals:
    if options.kite_sandbox:
        from alphapanda.runtime.sandboxed import sandbox_settings

        settings = sandbox_settings(settings)
    core = build_core(settings)
    instruments = first_instruments(core.instruments, options.instruments)
    _check_reachable(settings)
    # Claimed before any server starts, so a second run on the same directory is refused at once.
    claim_runinfo()
    with contextlib.ExitStack() as extras:
        pending_api = _serve_api(options.api_port, extras, console)
        settings, servers = start_infrastructure(settings, extras)
        console.print(
            f"[bold]alphapanda[/] kafka {settings.kafka.bootstrap_servers}  redis {settings.redis.url}  "
            f"brokers {','.join(settings.brokers)}  instruments {len(instruments)}"
        )
        store, publisher = connect(settings)
        extras.callback(publisher.close)
        publish_runinfo(settings)
        if pending_api is not None:
            pending_api.ready(ReadApi(store, settings.brokers, kite_login(settings, store.client)))
        dispatcher = Dispatcher(
            bindings(list(settings.brokers)),
            core.stage_for,
            store,
            publisher,
            settings.kafka,
            settings.delivery,
        )
        # Stopped on every way out, a stop during start-up included (the workers are threads of
        # this process, consuming from servers about to be stopped).
        extras.callback(dispatcher.stop, 1.0)
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
        failure: RunFailed | None = None
        try:
            feed.start()
            _watch(core, dispatcher, feed, store, publisher, options, started, console, reconcilers, servers)
        except _Stop:
            console.print("stopping…")
        except RunFailed as exc:
            failure = exc
            console.print(f"[red]{exc}[/]")
            signals.hurry.set()  # nothing drains without the server: stop now
        finally:
            signals.shutting_down = True
            _stop_pipeline(feed, dispatcher, signals)
        drained = _drain(dispatcher, signals, servers) if failure is None else False
        dispatcher.stop(timeout_s=1.0 if signals.hurry.is_set() else 10.0)
        totals = _final_totals(core, dispatcher, feed, store, reconcilers)
        _print_summary(console, totals, time.monotonic() - started, drained, latest_alert(dispatcher))
        if failure is not None:
            raise failure
        if feed.failed is not None:
            raise RunFailed(f"the market feed failed: {feed.failed}") from feed.failed
        return totals


def _serve_api(port: int | None, extras: contextlib.ExitStack, console: Console) -> PendingReadApi | None:
    """Bind the read API's port now, before any server starts, so a port in use stops the run
    before it began; it answers 503 until the pipeline's state store is there."""
    if port is None:
        return None
    pending = PendingReadApi()
    try:
        server = serve_read_api(pending, port)
    except OSError as exc:
        raise ConfigError(
            f"--api-port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}): "
            "pick another port, or 0 for any free one"
        ) from None
    extras.callback(server.server_close)
    extras.callback(server.shutdown)
    console.print(f"read API http://127.0.0.1:{server.server_address[1]}/brokers")
    return pending


def _stop_pipeline(feed: Feed, dispatcher: Dispatcher, signals: _StopSignals) -> None:
    """Stop the feed, waiting up to 10 s for its last ticks (less once told to hurry)."""
    feed.stop()
    deadline = time.monotonic() + 10.0
    while not feed.finished.is_set() and time.monotonic() < deadline and not signals.hurry.is_set():
        feed.finished.wait(0.1)
    feed.join(0.5 if signals.hurry.is_set() else 1.0)


def _final_totals(
    core: Core,
    dispatcher: Dispatcher,
    feed: Feed,
    store: StateStore,
    reconcilers: Sequence[PeriodicReconciler],
) -> RunTotals:
    """`_totals`, or with the books left blank if Redis (which holds them) is gone: the counts of
    the stages are still worth printing."""
    try:
        return _totals(core, dispatcher, feed, store, reconcilers)
    except redis.RedisError:
        zero = Decimal(0)
        blank = tuple(BrokerSummary(b, 0, 0, zero, zero, zero, zero) for b in core.brokers)
        return _counted(core, dispatcher, feed, blank, reconcilers)


def _drain(dispatcher: Dispatcher, signals: _StopSignals, servers: Sequence[_Server]) -> bool:
    """Let the pipeline consume what the feed sent (up to 15 s), unless told to hurry or a server
    died; True if it drained."""
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and not signals.hurry.is_set():
        if any(s.exit_code() is not None for s in servers):
            return False
        try:
            if dispatcher.wait_idle(timeout_s=min(1.0, max(deadline - time.monotonic(), 0.6)), quiet_s=0.5):
                return True
        except RuntimeError:  # a consumer died while draining: what it had not done stays on the topics
            return False
    return False


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
    servers: Sequence[_Server] = (),
) -> None:
    last_ticks, last_time = 0, started
    last_mark = started
    rate = 0.0
    with Live(console=console, refresh_per_second=4, transient=False, auto_refresh=False) as live:
        while True:
            # Servers first: a consumer failing on a dead server should be reported as the server.
            _check_servers(servers)
            try:
                dispatcher.check()
            except RuntimeError as exc:
                _check_servers(servers)
                raise RunFailed(" ".join(str(exc).split())) from exc
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
                live.update(
                    _view(core, dispatcher, feed, store, reconcilers, rate, now - started), refresh=True
                )
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


def _totals(
    core: Core,
    dispatcher: Dispatcher,
    feed: Feed,
    store: StateStore,
    reconcilers: Sequence[PeriodicReconciler],
) -> RunTotals:
    books = tuple(broker_summary(store, b) for b in core.brokers)
    return _counted(core, dispatcher, feed, books, reconcilers)


def _counted(
    core: Core,
    dispatcher: Dispatcher,
    feed: Feed,
    brokers: tuple[BrokerSummary, ...],
    reconcilers: Sequence[PeriodicReconciler],
) -> RunTotals:
    """The run's counts, from the stages' own statistics, beside each broker's books."""
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
        alerts=sum(w.stats.alerts for w in dispatcher.workers) + sum(r.alerts for r in reconcilers),
        brokers=brokers,
        per_broker=tuple(_broker_counts(dispatcher, b) for b in core.brokers),
    )


def _view(
    core: Core,
    dispatcher: Dispatcher,
    feed: Feed,
    store: StateStore,
    reconcilers: Sequence[PeriodicReconciler],
    rate: float,
    elapsed: float,
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
    totals = _totals(core, dispatcher, feed, store, reconcilers)
    latest = latest_alert(dispatcher)
    if not latest:
        return Group(stages, _broker_table(totals))
    # The reconciliation's alerts are printed above the view as they happen; the stages' would
    # scroll by unseen, so the latest stays in view.
    return Group(
        stages, _broker_table(totals), Text(f"alerts {totals.alerts:,}; latest: {latest}", style="yellow")
    )


def latest_alert(dispatcher: Dispatcher) -> str:
    """The message of the latest alert any stage raised, or "" if none did."""
    stats = max(
        (w.stats for w in dispatcher.workers if w.stats.alerts), key=lambda s: s.last_alert_at, default=None
    )
    return stats.last_alert if stats is not None else ""


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


def _print_summary(console: Console, totals: RunTotals, elapsed: float, drained: bool, latest: str) -> None:
    console.print(_broker_table(totals))
    if latest:
        console.print(
            Text(
                f"{totals.alerts:,} alert{'s' if totals.alerts != 1 else ''}; the latest: {latest}",
                style="yellow",
            ),
            soft_wrap=True,  # one line, as scripts read it
        )
    if not drained:
        console.print(
            "[yellow]the pipeline had not drained when it was stopped; the rest stays on the topics[/]"
        )
    console.print(f"ran {elapsed:,.1f}s; {totals.ticks / max(elapsed, 1e-9):,.0f} ticks/s on average")
    # Plain print: unwrapped lines that scripts and tests can parse.
    for line in totals.broker_lines():
        print(line, flush=True)
    print(totals.line(), flush=True)

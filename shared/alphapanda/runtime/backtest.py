"""Backtest: the pipeline's own stage handlers, in-process, without Kafka or HTTP.

Each tick event goes to the stages `topics.PIPELINE` names for its topic (the strategy runner
and the paper order matcher); every output goes on to the stages its own topic triggers (raw
signal -> risk manager -> validated -> trading engine -> fill -> portfolio manager), through
`stages.process`, the same exactly-once path the Kafka dispatcher and the HTTP adapter use. All
events a tick causes are handled (first in, first out) before the next tick, so a run is a pure
function of its ticks, settings and strategies: the same input gives the same report, byte for
byte. Output events carry the wall clock as their CloudEvent `time`, so the report uses payload
times (tick and fill times) only.

The fast path (on a `BacktestStateStore`) runs the same handlers' logic without what only the
pipeline needs. Ticks are validated rows (`tickfiles.TickRow`); a row becomes a `MarketTick`
event only when it causes something. Each strategy's `on_tick` runs on state kept as objects.
The order matcher runs on a tick only if orders rest on the instrument or the square-off is due
and not yet done (otherwise `OrderMatcher.decide` would change nothing but the instrument's
last market). Quote, symbol, last-market and indicator keys are derived from the last tick when
read. Risk manager, trading engine and portfolio manager compute through the pure functions
their `decide` wraps (`judge`, `place`, `apply`) on values kept decoded. tests/unit/
test_backtest_fast.py runs both paths on workloads with resting orders, square-off, expiry,
rejections, two brokers and replayed ticks, and asserts identical reports, fills and state.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from alphapanda import stages
from alphapanda.brokers.base import Quote
from alphapanda.brokers.paper import HALTED, AccountView, PaperTrader, dump_resting, load_resting
from alphapanda.domain.calendar import to_ist
from alphapanda.domain.matching import Market
from alphapanda.domain.portfolio import Book
from alphapanda.domain.report import EquityTracker, FillRecord, Report, build_report
from alphapanda.domain.risk import BrokerState, LastSignal
from alphapanda.domain.strategy import StrategyState, TickView
from alphapanda.events import (
    IST,
    Alert,
    Event,
    EventType,
    MarketTick,
    OrderFilled,
    PnlSnapshot,
    Signal,
    SignalValidated,
)
from alphapanda.runtime.bootstrap import Core
from alphapanda.runtime.tickfiles import TickRow, row_of
from alphapanda.stages.order_matcher import OrderMatcher
from alphapanda.stages.portfolio_manager import Account, DayPnl, PortfolioManager
from alphapanda.stages.risk_ledger import LedgerView, ledger_reads
from alphapanda.stages.risk_manager import RiskInputs, RiskManager, trading_day
from alphapanda.stages.strategy_runner import StrategyFailed, StrategyRunner, user_tick
from alphapanda.stages.trading_engine import TradingEngine, depth_left
from alphapanda.state import keys
from alphapanda.state.store import Decide, Republished, StateStore
from alphapanda.strategies import StrategySpec
from alphapanda.topics import Function, bindings, market_scope

Progress = Callable[[int], None]
T = TypeVar("T")
ZERO = Decimal(0)
_TICK = EventType.MARKET_TICK
_TYPE_NAME = {t: t.name for t in EventType}
"""Each event type's name, as counted: an enum's `.name` is a Python-level descriptor."""


_Typed = tuple[Any, Callable[[Any], str]]
"""A value kept decoded, with the function that gives its stored text: a plain pair, because the
fast path keeps about sixteen of them per order and a dataclass costs several times a tuple."""


class BacktestStateStore:
    """A `StateStore` for one single-threaded run: values may be kept decoded, claims as objects.

    The pipeline's stores hold text (JSON) and serialise each event's outputs into its claim so
    a redelivery can republish them. A backtest never redelivers across processes, so the fast
    engine keeps books, accounts and ledgers as the objects the stages compute on (`put`/`load`)
    and encodes them only when a stage reads them as text (`get`, `process_once`, `snapshot`).
    Market keys (quotes, symbols, the matcher's last market, indicator state) are derived from
    the last tick of each instrument when read (`derive`), instead of being rewritten per tick.
    Reads, writes, set adds and the once-only claim behave as in `MemoryStateStore`.
    """

    def __init__(self) -> None:
        self._data: dict[str, str | _Typed] = {}
        self._sets: dict[str, set[str]] = {}
        self._claims: dict[str, list[Event]] = {}
        self._derived: dict[str, Callable[[], str | None]] = {}
        self._on_write: dict[str, Callable[[str], None]] = {}

    def process_once(self, claim_key: str, read_keys: Sequence[str], decide: Decide) -> list[Event]:
        done = self._claims.get(claim_key)
        if done is not None:
            return Republished(done)
        decision = decide({k: self.get(k) for k in read_keys})
        derived = self._derived
        for key, value in decision.writes.items():
            # A derived key's value is a function of the instrument's last tick, which is the
            # tick the writing stage is processing: the write would store the same text, unless
            # the key takes writes (the matcher's last tick, which orders deplete).
            if key not in derived:
                self._data[key] = value
            elif (on_write := self._on_write.get(key)) is not None:
                on_write(value)
        for key, member in decision.set_adds.items():
            self._sets.setdefault(key, set()).add(member)
        self._claims[claim_key] = decision.outputs
        return decision.outputs

    def get(self, key: str) -> str | None:
        derive = self._derived.get(key)
        if derive is not None:
            return derive()
        value = self._data.get(key)
        if value is None or isinstance(value, str):
            return value
        return value[1](value[0])

    def members(self, key: str) -> set[str]:
        return set(self._sets.get(key, ()))

    def load(self, key: str, decode: Callable[[str], T]) -> T | None:
        """The value of `key` decoded (by `decode` if it is stored as text), or None."""
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return decode(value)
        decoded: T = value[0]
        return decoded

    def put(self, key: str, value: Any, encode: Callable[[Any], str] = str) -> None:
        """Keep `value` decoded under `key`; `encode` gives its stored text."""
        self._data[key] = (value, encode)

    def set_text(self, key: str, text: str) -> None:
        self._data[key] = text

    def has_text(self, key: str) -> str | None:
        """The stored text of `key` if it is kept as text (not decoded, not derived), else None."""
        value = self._data.get(key)
        return value if isinstance(value, str) else None

    def derive(
        self, key: str, value_of: Callable[[], str | None], on_write: Callable[[str], None] | None = None
    ) -> None:
        """Make `key` read as `value_of()` (see the class docstring); a stage's write to it goes
        to `on_write` if given, else nowhere."""
        self._derived[key] = value_of
        if on_write is not None:
            self._on_write[key] = on_write

    def snapshot(self) -> dict[str, Any]:
        """Every key except claims, as text: what a test compares between two runs."""
        out = {k: self.get(k) for k in self._data}
        out.update((k, self.get(k)) for k in self._derived)
        return {k: v for k, v in out.items() if v is not None and ":claim:" not in k}


@dataclass
class BacktestResult:
    report: Report
    fills: list[Event]
    events: Counter[str] = field(default_factory=Counter)
    alerts: list[Event] = field(default_factory=list)
    """The run's alerts (`{broker}.alerts`): a user's strategy failing on a tick, the daily loss
    limit turning a broker to REDUCING, ..."""
    strategy_failures: Counter[str] = field(default_factory=Counter)
    """Per strategy of the user's own, how many ticks it failed on (and so sent nothing for):
    its `strategy_error` alerts thin out as failures go on, so they do not say."""


def _dumps_sorted(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _book_text(book: Book) -> str:
    return json.dumps(book.to_json())


def _account_text(account: Account) -> str:
    return account.to_json()


def _day_text(day: DayPnl) -> str:
    return day.to_json()


def _last_signal_text(last: LastSignal) -> str:
    return json.dumps(last.to_json())


def _order_text(status: tuple[str, str]) -> str:
    return json.dumps({"status": status[0], "signal": status[1]})


def _book_of(raw: str) -> Book:
    return Book.from_json(json.loads(raw))


def _last_signal_of(raw: str) -> LastSignal:
    return LastSignal.from_json(json.loads(raw))


class _Instrument:
    """Per-instrument state of the fast engine: its last tick, strategies and their states."""

    __slots__ = (
        "event",
        "failures",
        "left",
        "left_row",
        "market",
        "market_row",
        "matchers",
        "row",
        "specs",
        "states",
        "strategies",
        "token",
    )

    def __init__(self, token: int, specs: list[StrategySpec], matchers: list[_MatcherSlot]) -> None:
        self.token = token
        self.row: TickRow | None = None
        self.event: Event | None = None
        """The last tick as an event, once something needed it."""
        self.specs = specs
        self.strategies = [spec.strategy for spec in specs]
        self.states: list[StrategyState | str | None] = [None] * len(specs)
        """Decoded state for a built-in strategy; the stored JSON text for a user's own."""
        self.failures: list[int | None] = [None] * len(specs)
        """Per user's strategy, the ticks in a row it has failed on (None: it never failed)."""
        self.matchers = matchers
        self.market: Market | None = None
        self.market_row: TickRow | None = None
        """The row `market` was made from."""
        self.left: dict[str, Market] = {}
        """Per broker, what orders left of the last tick's depth (`keep_left`)."""
        self.left_row: TickRow | None = None
        """The row `left` is of: on a later tick it is stale (each tick shows the book afresh)."""

    def tick_event(self) -> Event:
        if self.event is None:
            assert self.row is not None
            self.event = self.row.event()
        return self.event

    def quote_text(self) -> str | None:
        row = self.row
        if row is None:
            return None
        return json.dumps(Quote(row.bid, row.ask, row.last_price, row.exchange_timestamp).to_json())

    def symbol_text(self) -> str | None:
        return None if self.row is None else f"{self.row.exchange}:{self.row.tradingsymbol}"

    def last_market(self, broker: str | None = None) -> Market | None:
        """The last tick as `broker`'s order matcher keeps it (`keys.paper_market`): as orders
        left its depth, if they took some, else the tick itself."""
        if self.row is None:
            return None
        if self.left and self.left_row is self.row and broker in self.left:
            return self.left[broker]
        if self.market is None or self.market_row is not self.row:
            self.market = Market.from_tick(self.tick_event().data)  # type: ignore[arg-type]
            self.market_row = self.row
        return self.market

    def keep_left(self, broker: str, market: Market) -> None:
        """What orders of `broker` left of the last tick's depth."""
        if self.left_row is not self.row:
            self.left = {}
            self.left_row = self.row
        self.left[broker] = market

    def market_text(self, broker: str) -> str | None:
        market = self.last_market(broker)
        return None if market is None else json.dumps(market.to_json())

    def market_written(self, broker: str, text: str) -> None:
        """A stage wrote `broker`'s `keys.paper_market` (the matcher, on a tick it matched)."""
        self.keep_left(broker, Market.from_json(json.loads(text)))

    def state_text(self, index: int) -> str | None:
        state = self.states[index]
        return state if state is None or isinstance(state, str) else json.dumps(state)

    def failures_text(self, index: int) -> str | None:
        failures = self.failures[index]
        return None if failures is None else str(failures)


@dataclass(slots=True)
class _MatcherSlot:
    """One paper broker's order matcher as the fast engine consults it for one instrument."""

    stage: stages.AnyStage
    broker: str
    trader: PaperTrader
    resting_key: str


class Backtest:
    """Route events through `core`'s stages for its brokers, on `store`.

    On a `BacktestStateStore` (and unless `fast=False`) the run takes the fast path: ticks are
    rows, each strategy's `on_tick` runs on state kept in memory, the order matcher runs only
    on ticks that can change something (resting orders on the instrument, or a square-off due
    and not yet done), and the risk manager, trading engine and portfolio manager compute on
    decoded state through the same pure functions their `decide` uses (`RiskManager.judge`,
    `TradingEngine.place`, `PortfolioManager.apply`). Any other stage, and every other store,
    takes the general path: each event through `stages.process`, as the pipeline does.
    """

    def __init__(
        self, core: Core, store: StateStore, *, bar_seconds: float = 60.0, fast: bool = True
    ) -> None:
        self._core = core
        self._store = store
        routes: dict[str, list[stages.AnyStage]] = {}
        for binding in bindings(list(core.brokers)):
            stage = core.stage_for(binding.function, binding.broker)
            for topic in binding.topics:
                routes.setdefault(topic, []).append(stage)
        self._routes = routes
        # One account for the report: the sum of the brokers' starting cash.
        cash = sum((core.settings.for_broker(b).starting_cash for b in core.brokers), Decimal(0))
        self._tracker = EquityTracker(starting_cash=cash, bar_seconds=bar_seconds)
        self._fast = fast and isinstance(store, BacktestStateStore) and self._fast_routes_ok()
        self._instruments: dict[int, _Instrument] = {}
        self._ledger_keys: dict[tuple[str, int, str], list[str]] = {}
        self._strategy_totals: dict[str, tuple[dict[str, list[str]], Decimal | None]] = {}
        self._handlers: dict[tuple[EventType, str | None], list[Callable[[Event], list[Event]]]] = {}
        self._alerts: list[Event] = []

    def _fast_routes_ok(self) -> bool:
        known = (StrategyRunner, OrderMatcher, RiskManager, TradingEngine, PortfolioManager)
        return all(isinstance(s, known) for ss in self._routes.values() for s in ss)

    def run(self, ticks: Iterable[Event | TickRow], progress: Progress | None = None) -> BacktestResult:
        self._alerts = []
        if self._fast:
            return self._run_fast(ticks, progress)
        return self._run_general((t.event() if isinstance(t, TickRow) else t for t in ticks), progress)

    def _failure_counts(self) -> Counter[str]:
        """Per user's strategy, the ticks it failed on: the streaks its `strategy_recovered`
        alerts closed (one alert per broker for a tick) plus the streaks still open at the end,
        as the runner stored them."""
        counts: Counter[str] = Counter()
        seen: set[tuple[str | None, str]] = set()
        for event in self._alerts:
            alert = event.data
            if isinstance(alert, Alert) and alert.kind == "strategy_recovered":
                name = alert.details["strategy"]
                if (event.causationid, name) not in seen:
                    seen.add((event.causationid, name))
                    counts[name] += int(alert.details["failures_in_a_row"])
        scopes = {market_scope(b) for b in self._core.brokers}
        runner = self._core.stages[Function.STRATEGY_RUNNER]
        assert isinstance(runner, StrategyRunner)
        for spec in runner.strategies:
            if spec.builtin:
                continue
            for token in spec.tokens:
                for scope in scopes:
                    open_streak = self._store.get(keys.strategy_failures(spec.name, token, scope))
                    counts[spec.name] += int(open_streak or 0)
        return +counts

    # --- the general path -----------------------------------------------------------------

    def _run_general(self, ticks: Iterable[Event], progress: Progress | None) -> BacktestResult:
        routes, store, tracker = self._routes, self._store, self._tracker
        counts: Counter[str] = Counter()
        fills: list[Event] = []
        records: list[FillRecord] = []
        queue: deque[Event] = deque()
        n = 0
        for tick_event in ticks:
            n += 1
            queue.append(tick_event)
            while queue:
                event = queue.popleft()
                counts[event.type.name] += 1
                caused = [
                    e for stage in routes.get(event.topic, ()) for e in stages.process(stage, event, store)
                ]
                if event.type is EventType.ALERT:
                    self._alerts.append(event)
                if event.type is EventType.ORDER_FILLED:
                    # Recorded once the portfolio took it: a DP charge comes with its snapshot.
                    fills.append(event)
                    record = _record(event, caused)
                    records.append(record)
                    tracker.on_fill(record)
                queue.extend(caused)
            tick = tick_event.data
            assert isinstance(tick, MarketTick)
            tracker.on_mark(tick.instrument_token, (tick.bid + tick.ask) / 2, tick.exchange_timestamp)
            if progress is not None and n % 1000 == 0:
                progress(1000)
        if progress is not None:
            progress(n % 1000)
        tracker.finish()
        failures = self._failure_counts()
        report = build_report(tracker, records, ticks=n, events=dict(counts), strategy_failures=failures)
        return BacktestResult(report, fills, counts, self._alerts, failures)

    # --- the fast path --------------------------------------------------------------------

    def _typed_store(self) -> BacktestStateStore:
        assert isinstance(self._store, BacktestStateStore), "the fast path runs on a BacktestStateStore"
        return self._store

    def _instrument(self, token: int) -> _Instrument:
        core, store = self._core, self._typed_store()
        runner = core.stages[Function.STRATEGY_RUNNER]
        assert isinstance(runner, StrategyRunner)
        specs = runner._specs_for(token)
        matchers: list[_MatcherSlot] = []
        inst = _Instrument(token, specs, matchers)
        for stage in self._routes.get(_tick_topic(), ()):
            if not isinstance(stage, OrderMatcher):
                continue
            for broker in sorted(stage.brokers):
                if market_scope(broker) is not None:
                    continue  # a replay broker's matcher takes only ticks replayed for it
                assert stage.traders is not None, "OrderMatcher needs a TraderFactory"
                trader = stage.traders.paper(broker)
                if token in trader.instruments:
                    matchers.append(_MatcherSlot(stage, broker, trader, keys.resting_orders(broker, token)))
                    store.derive(
                        keys.paper_market(broker, token),
                        functools.partial(inst.market_text, broker),
                        functools.partial(inst.market_written, broker),
                    )
        store.derive(keys.quote(token), inst.quote_text)
        store.derive(keys.symbol(token), inst.symbol_text)
        for index, spec in enumerate(specs):
            store.derive(keys.indicator(spec.name, token), functools.partial(inst.state_text, index))
            if not spec.builtin:
                store.derive(
                    keys.strategy_failures(spec.name, token),
                    functools.partial(inst.failures_text, index),
                )
        return inst

    def _run_fast(self, ticks: Iterable[Event | TickRow], progress: Progress | None) -> BacktestResult:
        store = self._typed_store()
        tracker = self._tracker
        runner = self._core.stages[Function.STRATEGY_RUNNER]
        assert isinstance(runner, StrategyRunner)
        counts: Counter[str] = Counter()
        fills: list[Event] = []
        records: list[FillRecord] = []
        instruments = self._instruments
        seq: dict[int, int] = {}
        marks = tracker.marks
        data = store._data
        signals_of = runner.signals
        ist_date = date.min
        bar_lo = bar_hi = None
        day_lo = day_hi = None
        square_off_at: dict[str, datetime] = {}
        day = ""
        n = reported = 0
        next_progress = 1000
        at: datetime | None = None
        for item in ticks:
            if not isinstance(item, tuple):
                if item.broker is not None:
                    # A tick replayed for one broker feeds that broker's own market state
                    # (`topics.market_scope`), which the fast path does not derive: it takes
                    # the general path, on the same store.
                    n += 1
                    at = self._scoped_tick(item, counts, fills, records)
                    bar_lo = bar_hi = None  # the tracker sampled by itself: its bar may have moved
                    continue
                # A tick event: number it as `feed.TickStamper` would, and keep the event.
                token = item.data.instrument_token  # type: ignore[attr-defined]
                count = seq.get(token, 0)
                seq[token] = count + 1
                item = row_of(item, count)
            row: TickRow = item
            n += 1
            token = row[0]
            inst = instruments.get(token)
            if inst is None:
                inst = instruments[token] = self._instrument(token)
            inst.row = row
            inst.event = row[14]  # the stamped event, if the row came from one
            at = row[4]
            mid = (row[6] + row[7]) / 2
            outputs: list[Event] | None = None
            if inst.specs:
                view = TickView(token, mid, row[5], row[6], row[7], row[10], at)
                states = inst.states
                for index, strategy in enumerate(inst.strategies):
                    spec = inst.specs[index]
                    if spec.builtin:
                        states[index], intents = strategy.on_tick(states[index], view)  # type: ignore[arg-type]
                    else:
                        # A user's strategy: its state kept as the JSON text the pipeline
                        # stores, and its failures counted and alerted as the pipeline's
                        # runner counts and alerts them.
                        streak = inst.failures[index] or 0
                        try:
                            states[index], intents = user_tick(spec, states[index], view)  # type: ignore[arg-type]
                        except StrategyFailed as failed:
                            inst.failures[index] = streak + 1
                            alerts = runner.failed(inst.tick_event(), spec, failed, streak + 1)
                            if alerts:
                                outputs = alerts if outputs is None else outputs + alerts
                            continue
                        if streak:
                            inst.failures[index] = 0
                            alerts = runner.recovered(inst.tick_event(), spec, streak)
                            outputs = alerts if outputs is None else outputs + alerts
                    if intents:
                        signals = signals_of(inst.tick_event(), inst.specs[index], intents, mid)
                        outputs = signals if outputs is None else outputs + signals
            if inst.matchers:
                if day_lo is None or not day_lo <= at < day_hi:  # type: ignore[operator]
                    day_lo, day_hi, ist_date = _ist_day(at)
                    day = ist_date.isoformat()
                    square_off_at = {}
                for slot in inst.matchers:
                    # Resting orders are always stored as text (`set_text`, or a matcher's write).
                    resting = data.get(slot.resting_key)
                    due_at = square_off_at.get(slot.broker)
                    if due_at is None:
                        # `PaperTrader.square_off_due` as an instant: at/after it, on this day.
                        due_at = square_off_at[slot.broker] = slot.trader.square_off_instant(ist_date, at)
                    # The matcher changes nothing on a tick without resting orders on the
                    # instrument unless the square-off is due and not yet done today.
                    if (resting is not None and resting != "[]") or (
                        at >= due_at and store.get(keys.square_off_done(slot.broker, token, day)) is None
                    ):
                        done = stages.process(slot.stage, inst.tick_event(), store)
                        if done:
                            outputs = done if outputs is None else outputs + done
            if outputs:
                self._cascade(outputs, counts, fills, records)
            marks[token] = mid
            if bar_lo is None or not bar_lo <= at < bar_hi:  # type: ignore[operator]
                tracker.on_mark(token, mid, at)
                bar_lo, bar_hi = tracker.bar_span(at)
            if n >= next_progress:
                if progress is not None:
                    progress(n - reported)
                reported = n
                next_progress = n + 1000
        if progress is not None:
            progress(n - reported)
        counts["MARKET_TICK"] += n
        if at is not None:
            tracker.seen(at)
        tracker.finish()
        failures = self._failure_counts()
        report = build_report(tracker, records, ticks=n, events=dict(counts), strategy_failures=failures)
        return BacktestResult(report, fills, counts, self._alerts, failures)

    def _scoped_tick(
        self, event: Event, counts: Counter[str], fills: list[Event], records: list[FillRecord]
    ) -> datetime:
        """A replayed tick, as the general path runs it (`stages.process` for every stage of its
        topic), then what it causes."""
        outputs: list[Event] = []
        for stage in self._routes.get(event.topic, ()):
            outputs.extend(stages.process(stage, event, self._store))
        if outputs:
            self._cascade(outputs, counts, fills, records)
        tick = event.data
        assert isinstance(tick, MarketTick)
        self._tracker.on_mark(tick.instrument_token, (tick.bid + tick.ask) / 2, tick.exchange_timestamp)
        return tick.exchange_timestamp

    def _cascade(
        self, first: list[Event], counts: Counter[str], fills: list[Event], records: list[FillRecord]
    ) -> None:
        """Everything the outputs of one tick cause, first in first out, as in the general path."""
        tracker = self._tracker
        handlers_of = self._handlers
        queue: deque[Event] = deque(first)
        while queue:
            event = queue.popleft()
            counts[_TYPE_NAME[event.type]] += 1
            if event.type is EventType.ALERT:
                self._alerts.append(event)
            handlers = handlers_of.get((event.type, event.broker)) if event.type is not _TICK else None
            if handlers is None:
                handlers = self._handlers_for(event)
            if event.type is EventType.ORDER_FILLED:
                caused = [e for handle in handlers for e in handle(event)]
                fills.append(event)
                record = _record(event, caused)  # as in the general path: after the portfolio
                records.append(record)
                tracker.on_fill(record)
                queue.extend(caused)
                continue
            for handle in handlers:
                queue.extend(handle(event))

    def _handlers_for(self, event: Event) -> list[Callable[[Event], list[Event]]]:
        """The handlers of the stages `event`'s topic feeds, in route order: the typed fast path
        for the risk manager, trading engine and portfolio manager, `stages.process` otherwise.

        An event's topic is a function of its type and broker except for a tick (whose topic is
        its asset class's), so they are kept by (type, broker), sparing the topic name and the
        stage's type tests per event. `event.topic` raises for an event without the broker its
        type needs, so such an event is never kept and raises every time, as before."""
        handlers: list[Callable[[Event], list[Event]]] = []
        for stage in self._routes.get(event.topic, ()):
            if isinstance(stage, RiskManager):
                handlers.append(functools.partial(self._risk, stage))
            elif isinstance(stage, TradingEngine):
                handlers.append(functools.partial(self._engine, stage))
            elif isinstance(stage, PortfolioManager):
                handlers.append(functools.partial(self._portfolio, stage))
            else:
                handlers.append(functools.partial(stages.process, stage, store=self._store))
        if event.type is not _TICK:
            self._handlers[event.type, event.broker] = handlers
        return handlers

    def _ledger_reads(self, broker: str, token: int, strategy: str) -> list[str]:
        found = self._ledger_keys.get((broker, token, strategy))
        if found is None:
            found = self._ledger_keys[broker, token, strategy] = ledger_reads(broker, token, strategy)
        return found

    def _ledger(self, broker: str, token: int, strategy: str) -> LedgerView:
        store = self._typed_store()
        pos_key, notional_key, gross_key, strategy_key, open_key = self._ledger_reads(broker, token, strategy)
        positions = store.load(strategy_key, json.loads) or {}
        # The strategy's total notional as `_put_ledger` last kept it, while the positions are
        # still the very object it was kept with (a stage writing the key as text replaces it).
        kept = self._strategy_totals.get(strategy_key)
        total = kept[1] if kept is not None and kept[0] is positions else None
        return LedgerView(
            position=store.load(pos_key, int) or 0,
            notional=store.load(notional_key, Decimal) or ZERO,
            gross=store.load(gross_key, Decimal) or ZERO,
            strategy_positions=positions,
            open_orders=store.load(open_key, int) or 0,
            strategy_total=total,
        ).with_total()

    def _put_ledger(self, ledger: LedgerView, broker: str, token: int, strategy: str) -> None:
        store = self._typed_store()
        pos_key, notional_key, gross_key, strategy_key, open_key = self._ledger_reads(broker, token, strategy)
        store.put(pos_key, ledger.position)
        store.put(notional_key, ledger.notional)
        store.put(gross_key, ledger.gross)
        store.put(strategy_key, ledger.strategy_positions, _dumps_sorted)
        store.put(open_key, ledger.open_orders)
        self._strategy_totals[strategy_key] = (ledger.strategy_positions, ledger.strategy_total)

    def _quote(self, broker: str, token: int) -> Quote | None:
        """What `Quote.from_json` gives for the broker's `keys.quote`: built from the last tick
        itself for a live broker (whose quote key the fast path derives from it)."""
        inst = self._instruments.get(token)
        scope = market_scope(broker)
        if inst is None or inst.row is None or scope is not None:
            raw = self._typed_store().get(keys.quote(token, scope))
            return Quote.from_json(json.loads(raw)) if raw else None
        row = inst.row
        return Quote(row.bid, row.ask, row.last_price, row.exchange_timestamp)

    def _last_market(self, broker: str, token: int) -> Market | None:
        """What `Market.from_json` gives for `keys.paper_market`: the derived last tick itself."""
        inst = self._instruments.get(token)
        if inst is None or not any(slot.broker == broker for slot in inst.matchers):
            raw = self._typed_store().get(keys.paper_market(broker, token))
            return Market.from_json(json.loads(raw)) if raw else None
        return inst.last_market(broker)

    def _keep_left(self, broker: str, token: int, market: Market) -> None:
        """`keys.paper_market` as an order left it (what `TradingEngine.decide` writes)."""
        inst = self._instruments.get(token)
        if inst is None or not any(slot.broker == broker for slot in inst.matchers):
            self._typed_store().set_text(keys.paper_market(broker, token), json.dumps(market.to_json()))
        else:
            inst.keep_left(broker, market)

    def _risk(self, stage: RiskManager, event: Event) -> list[Event]:
        """`RiskManager.decide` on decoded state: the same keys, through `RiskManager.judge`."""
        store = self._typed_store()
        signal = event.data
        assert isinstance(signal, Signal)
        broker = stage.owner(event)
        token, strategy = signal.instrument_token, signal.strategy
        day = trading_day(signal.tick_time)
        quote = self._quote(broker, token)
        control_key = keys.control(broker)
        trades_key = keys.risk_trades(broker, strategy, day)
        last_key = keys.risk_last_signal(broker, strategy, token)
        day_record = store.load(keys.day_pnl(broker, day), DayPnl.from_json)
        inputs = RiskInputs(
            ledger=self._ledger(broker, token, strategy),
            last_price=quote.last_price if quote is not None else None,
            state=BrokerState(store.load(control_key, str) or BrokerState.ACTIVE),
            trades_today=store.load(trades_key, int) or 0,
            last_signal=store.load(last_key, _last_signal_of),
            day_pnl=day_record.total if day_record is not None else ZERO,
        )
        verdict = stage.judge(event, inputs)
        if verdict.reducing:
            store.put(control_key, BrokerState.REDUCING.value)
        if verdict.ledger is not None:
            self._put_ledger(verdict.ledger, broker, token, strategy)
            store.put(trades_key, verdict.trades_today)
            store.put(last_key, verdict.last_signal, _last_signal_text)
        return verdict.outputs

    def _engine(self, stage: TradingEngine, event: Event) -> list[Event]:
        """`TradingEngine.decide` on decoded state, through `TradingEngine.place`."""
        store = self._typed_store()
        validated = event.data
        assert isinstance(validated, SignalValidated) and stage.traders is not None
        signal = validated.signal
        broker = stage.owner(event)
        token = signal.instrument_token
        trader = stage.traders.paper(broker)
        # `market_for` reads neither the quote nor the last tick when the order meets the
        # signal's own touch: then they are not built (the last tick's `Market` costs a decode).
        market = trader.signal_market(signal)
        view = None
        if market is None:
            view = self._last_market(broker, token)
            market = trader.market_for(signal, self._quote(broker, token), view)
        margin_key = keys.margin_resting(broker)
        resting_margin = store.load(margin_key, Decimal) or ZERO
        account = store.load(keys.account(broker), lambda raw: Account.from_json(raw, trader.starting_cash))
        book = store.load(keys.book(broker, signal.strategy), _book_of)
        funds = AccountView(
            available=(account.available if account is not None else trader.starting_cash) - resting_margin,
            halted=store.load(keys.control(broker), str) == HALTED,
            position=book.position(token).net_quantity if book is not None else 0,
        )
        step, ids, outputs = stage.place(event, trader, market, funds)
        store.put(keys.order(broker, ids.order_id), (step.status, ids.signal_id), _order_text)
        if step.order is not None:
            resting_key = keys.resting_orders(broker, token)
            # Kept as text: the fast loop tests it for "no resting orders" on every tick.
            store.set_text(resting_key, dump_resting([*load_resting(store.get(resting_key)), step.order]))
        if step.margin_change:
            store.put(margin_key, resting_margin + step.margin_change)
        left = depth_left(view, market, step)
        if left is not None:
            self._keep_left(broker, token, left)
        if step.done:
            price = market.last if market is not None else signal.reference_price
            ledger = self._ledger(broker, token, signal.strategy)
            released = ledger.released(token, signal.side.sign * step.unfilled, price, order_done=True)
            self._put_ledger(released, broker, token, signal.strategy)
        return outputs

    def _portfolio(self, stage: PortfolioManager, event: Event) -> list[Event]:
        """`PortfolioManager.decide` on decoded state, through `PortfolioManager.apply`."""
        store = self._typed_store()
        fill = event.data
        assert isinstance(fill, OrderFilled)
        broker = stage.owner(event)
        starting_cash = stage.settings_for(broker).starting_cash
        book_key, account_key, day_key = stage.reads(event)
        update = stage.apply(
            event,
            store.load(book_key, _book_of),
            (
                store.load(account_key, lambda raw: Account.from_json(raw, starting_cash))
                or Account(starting_cash)
            ).with_held(),
            (store.load(day_key, DayPnl.from_json) or DayPnl.from_json(None)).with_total(),
        )
        store.put(book_key, update.book, _book_text)
        store.put(account_key, update.account, _account_text)
        store.put(day_key, update.day, _day_text)
        store._sets.setdefault(keys.books_index(broker), set()).add(fill.strategy)
        return update.outputs


def _tick_topic() -> str:
    from alphapanda.topics import market_ticks

    return market_ticks("equity")


def _ist_day(at: datetime) -> tuple[datetime, datetime, date]:
    """The IST day of instant `at`: its start and end (in `at`'s zone, so comparing ticks with
    them is cheap) and its date."""
    day = to_ist(at).date()
    start = datetime.combine(day, time(0), IST)
    zone = at.tzinfo
    return start.astimezone(zone), (start + timedelta(days=1)).astimezone(zone), day


def _record(event: Event, caused: list[Event]) -> FillRecord:
    """The report's record of the fill in `event`, with the DP charge the portfolio manager's
    snapshot of it (among `caused`, what the fill caused) says it took."""
    fill = event.data
    assert isinstance(fill, OrderFilled)
    dp = sum((e.data.dp_charges for e in caused if isinstance(e.data, PnlSnapshot)), ZERO)
    return FillRecord(
        fill_id=fill.fill_id,
        order_id=fill.order_id,
        strategy=fill.strategy,
        instrument_token=fill.instrument_token,
        tradingsymbol=fill.tradingsymbol,
        side=fill.side,
        quantity=fill.quantity,
        price=fill.price,
        charges=fill.charges,
        filled_at=fill.filled_at,
        dp_charges=dp,
    )


def between(events: Iterable[Event], start: datetime | None, end: datetime | None) -> Iterator[Event]:
    """Tick events with start <= exchange time < end (either bound optional).

    Filtered after the ticks got their ids, so a window of a file carries the same tick ids as
    a replay of the whole file.
    """
    for event in events:
        tick = event.data
        assert isinstance(tick, MarketTick)
        at = tick.exchange_timestamp
        if start is not None and at < start:
            continue
        if end is not None and at >= end:
            return
        yield event


def between_rows(rows: Iterable[TickRow], start: datetime | None, end: datetime | None) -> Iterator[TickRow]:
    """`between` for tick rows: numbered before the window is cut, like the events."""
    for row in rows:
        at = row.exchange_timestamp
        if start is not None and at < start:
            continue
        if end is not None and at >= end:
            return
        yield row


@contextlib.contextmanager
def redis_store(url: str | None, claim_ttl_s: int) -> Iterator[StateStore]:
    """A `RedisStateStore` on `url`, or on an embedded redis-server started (and stopped) here.

    A backtest writes books, ledgers and claims under the broker's usual keys, so it refuses a
    Redis database that already holds data: it must never touch live state.
    """
    import redis

    from alphapanda.runtime.embedded import EmbeddedRedis
    from alphapanda.state.store import RedisStateStore

    with contextlib.ExitStack() as stack:
        if not url:
            url = stack.enter_context(EmbeddedRedis()).url
        client: Any = redis.Redis.from_url(url)
        client.ping()
        if client.dbsize():
            raise BacktestError(
                f"the Redis database at {url} is not empty: a backtest needs an empty one "
                "(pick another database, e.g. redis://host:6379/15)"
            )
        try:
            yield RedisStateStore(client, claim_ttl_s)
        finally:
            client.close()


class BacktestError(ValueError):
    pass

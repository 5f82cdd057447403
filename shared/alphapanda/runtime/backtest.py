"""Backtest: the pipeline's own stage handlers, in-process, without Kafka or HTTP.

Each tick event goes to the stages `topics.PIPELINE` names for its topic (the strategy runner
and the paper order matcher); every output goes on to the stages its own topic triggers (raw
signal -> risk manager -> validated -> trading engine -> fill -> portfolio manager), through
`stages.process`, the same exactly-once path the Kafka dispatcher and the HTTP adapter use. All
events a tick causes are handled (first in, first out) before the next tick, so a run is a pure
function of its ticks, settings and strategies: the same input gives the same report, byte for
byte. Output events carry the wall clock as their CloudEvent `time`, so the report uses payload
times (tick and fill times) only.
"""

from __future__ import annotations

import contextlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from alphapanda import stages
from alphapanda.domain.report import EquityTracker, FillRecord, Report, build_report
from alphapanda.events import Event, EventType, MarketTick, OrderFilled
from alphapanda.runtime.bootstrap import Core
from alphapanda.state.store import Decide, MemoryStateStore, StateStore
from alphapanda.topics import bindings

Progress = Callable[[int], None]


class BacktestStateStore(MemoryStateStore):
    """`MemoryStateStore` for one single-threaded run: claims keep their outputs as objects.

    The pipeline's stores serialise each event's outputs into its claim so a redelivery can
    republish them; a backtest never redelivers across processes, so encoding them (a JSON dump
    of every payload, the largest cost of a memory run) buys nothing. Reads, writes, set adds
    and the once-only claim behave exactly as in `MemoryStateStore`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._claims: dict[str, list[Event]] = {}

    def process_once(self, claim_key: str, read_keys: Sequence[str], decide: Decide) -> list[Event]:
        done = self._claims.get(claim_key)
        if done is not None:
            return done
        data = self._data
        decision = decide({k: data.get(k) for k in read_keys})
        data.update(decision.writes)
        for key, member in decision.set_adds.items():
            self._sets.setdefault(key, set()).add(member)
        self._claims[claim_key] = decision.outputs
        return decision.outputs


@dataclass
class BacktestResult:
    report: Report
    fills: list[Event]
    events: Counter[str] = field(default_factory=Counter)


class Backtest:
    """Route events through `core`'s stages for its brokers, on `store`."""

    def __init__(self, core: Core, store: StateStore, *, bar_seconds: float = 60.0) -> None:
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

    def run(self, ticks: Iterable[Event], progress: Progress | None = None) -> BacktestResult:
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
                if event.type is EventType.ORDER_FILLED:
                    fills.append(event)
                    record = _record(event)
                    records.append(record)
                    tracker.on_fill(record)
                for stage in routes.get(event.topic, ()):
                    queue.extend(stages.process(stage, event, store))
            tick = tick_event.data
            assert isinstance(tick, MarketTick)
            tracker.on_mark(tick.instrument_token, (tick.bid + tick.ask) / 2, tick.exchange_timestamp)
            if progress is not None and n % 1000 == 0:
                progress(1000)
        if progress is not None:
            progress(n % 1000)
        tracker.finish()
        report = build_report(tracker, records, ticks=n, events=dict(counts))
        return BacktestResult(report, fills, counts)


def _record(event: Event) -> FillRecord:
    fill = event.data
    assert isinstance(fill, OrderFilled)
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

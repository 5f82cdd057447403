"""The market feed as a process: publish ticks from a source to the market topics at a set rate."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from alphapanda.bus.kafka import EventPublisher
from alphapanda.domain.calendar import CalendarCoverageError, TradingCalendar, to_ist
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.simulator import MarketSimulator
from alphapanda.events import MarketTick, now
from alphapanda.feed import TickStamper


def session_start_for_simulation(calendar: TradingCalendar, at: datetime) -> datetime:
    """Where a live simulation's market clock starts: now in session, else the latest session open.

    Risk judges the trading session by event time, so a simulation run at night trades in the
    most recent NSE session instead of being rejected as after hours.
    """
    if calendar.is_open(at):
        return at
    day = to_ist(at).date()
    for back in range(15):
        candidate = day - timedelta(days=back)
        with contextlib.suppress(ValueError, CalendarCoverageError):
            if calendar.is_trading_day(candidate):
                opens = calendar.session_bounds(candidate).open
                if opens <= at:
                    return opens
    return at


def live_simulation(
    instruments: list[Instrument], seed: int, market_start: datetime | None = None
) -> Iterator[MarketTick]:
    """Simulated ticks in real time; their market clock starts at `market_start` (default: now)."""
    wall_start = now()
    offset = (market_start or wall_start) - wall_start
    sim = MarketSimulator(instruments, seed=seed, start=wall_start + offset)
    while True:
        yield sim.next_tick(at=now() + offset)


def fixed_simulation(
    instruments: list[Instrument], seed: int, start: datetime, count: int
) -> Iterator[MarketTick]:
    """Exactly `count` simulated ticks in simulated market time: reproducible to the byte."""
    sim = MarketSimulator(instruments, seed=seed, start=start)
    for _ in range(count):
        yield sim.next_tick()


class FeedPublisher(threading.Thread):
    """Publish ticks at `rate` per second (0: as fast as the broker takes them)."""

    def __init__(
        self, ticks: Iterator[MarketTick], publisher: EventPublisher, rate: float, batch: int = 200
    ) -> None:
        super().__init__(name="market-feed", daemon=True)
        self.published = 0
        self.finished = threading.Event()
        self.failed: BaseException | None = None
        self._ticks = ticks
        self._publisher = publisher
        self._rate = rate
        self._batch = batch
        self._stamper = TickStamper()
        self._stop_requested = threading.Event()

    def stop(self) -> None:
        self._stop_requested.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced to the runner, which stops the run with the reason
            self.failed = exc
        finally:
            self.finished.set()

    def _run(self) -> None:
        started = time.monotonic()
        # Small batches at a high rate keep latency low; at a low rate one tick per send.
        batch = max(1, min(self._batch, int(self._rate / 50))) if self._rate > 0 else self._batch
        while not self._stop_requested.is_set():
            events = []
            for tick in self._ticks:
                events.append(self._stamper.stamp(tick))
                if len(events) >= batch:
                    break
            if not events:
                return
            self._publisher.publish(events)
            self.published += len(events)
            if self._rate > 0:
                due = started + self.published / self._rate
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop_requested.wait(delay)

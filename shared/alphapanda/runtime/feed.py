"""The market feed as a process: publish ticks from a source to the market topics at a set rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime

from alphapanda.bus.kafka import EventPublisher
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.simulator import MarketSimulator
from alphapanda.events import MarketTick, now
from alphapanda.feed import TickStamper


def live_simulation(instruments: list[Instrument], seed: int) -> Iterator[MarketTick]:
    """Simulated ticks stamped with the wall clock, for a live-looking run."""
    sim = MarketSimulator(instruments, seed=seed, start=now())
    while True:
        yield sim.next_tick(at=now())


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

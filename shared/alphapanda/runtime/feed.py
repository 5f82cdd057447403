"""The market feed as a process: publish ticks from a source to the market topics at a set rate.

`FeedPublisher` publishes from a thread of the caller's process; `FeedProcess` runs the same
publisher in a process of its own, as the feed is deployed (one Deployment), so that building,
stamping and encoding ticks does not take the GIL from the pipeline's stages in `alphapanda run`.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from alphapanda.bus.kafka import EventPublisher
from alphapanda.domain.calendar import CalendarCoverageError, TradingCalendar, to_ist
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.simulator import MarketSimulator
from alphapanda.events import MarketTick, now
from alphapanda.feed import TickStamper, read_ticks_csv


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
        self,
        ticks: Iterator[MarketTick],
        publisher: EventPublisher,
        rate: float,
        batch: int = 200,
        *,
        stamper: TickStamper | None = None,
        report: Callable[[int], None] | None = None,
    ) -> None:
        """`report` is called with the running count after each acknowledged batch."""
        super().__init__(name="market-feed", daemon=True)
        self.published = 0
        self.finished = threading.Event()
        self.failed: BaseException | None = None
        self._ticks = ticks
        self._publisher = publisher
        self._rate = rate
        self._batch = batch
        self._stamper = stamper or TickStamper()
        self._report = report
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
            if self._report is not None:
                self._report(self.published)
            if self._rate > 0:
                due = started + self.published / self._rate
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop_requested.wait(delay)


class Feed(Protocol):
    """What the local runner watches of a feed, in a thread (`FeedPublisher`) or not (`FeedProcess`)."""

    @property
    def published(self) -> int: ...

    @property
    def failed(self) -> BaseException | None: ...

    @property
    def finished(self) -> Any:
        """Has `is_set()`: true once the feed stopped (its source ended, it failed or was stopped)."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


@dataclass(frozen=True)
class FeedPlan:
    """Where a feed process takes its ticks from and where it publishes them (picklable)."""

    bootstrap_servers: str
    ack_timeout_s: float
    rate: float
    instruments: tuple[Instrument, ...] = ()
    seed: int = 7
    market_start: datetime | None = None
    """The simulated market clock's start (`live_simulation`); None: now."""
    replay: Path | None = None
    """Replay this CSV tick file instead of simulating."""
    limit: int | None = None
    """Stop after this many ticks (None: when the source ends, or never for a simulation)."""
    namespace: str = "tick"
    """The `TickStamper` namespace of the tick ids."""
    batch: int = field(default=500)
    """Ticks per produce when `rate` is 0 (at a set rate `FeedPublisher` sends small batches)."""

    def ticks(self) -> Iterator[MarketTick]:
        source = (
            read_ticks_csv(self.replay)
            if self.replay is not None
            else live_simulation(list(self.instruments), self.seed, self.market_start)
        )
        return source if self.limit is None else itertools.islice(source, self.limit)


class FeedProcess:
    """`FeedPublisher` in a child process (`python -m alphapanda.runtime.feed`), watched from here.

    The plan goes to the child pickled on its stdin; closing stdin asks it to stop. It reports
    on stdout, one line per acknowledged batch (`published N cpu S`), and `failed REASON` if its
    source or the broker failed. It dies with this process (PR_SET_PDEATHSIG).
    """

    def __init__(self, plan: FeedPlan) -> None:
        self._plan = plan
        self._process: subprocess.Popen[bytes] | None = None
        self._published = 0
        self._cpu_s = 0.0
        self._failed: BaseException | None = None
        self._stopped = False
        self.ready = threading.Event()
        """Set when the child is about to publish its first tick."""
        self.finished = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def published(self) -> int:
        return self._published

    @property
    def cpu_s(self) -> float:
        """CPU seconds the feed process has used publishing (from `ready`, as of its last batch)."""
        return self._cpu_s

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "alphapanda.runtime.feed"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C is the runner's: it stops the feed in order
        )
        assert self._process.stdin is not None
        self._process.stdin.write(pickle.dumps(self._plan))
        self._process.stdin.flush()
        self._reader = threading.Thread(target=self._read, name="market-feed-reports", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for raw in process.stdout:
            words = raw.decode().rstrip("\n").split(" ", 1)
            if words[0] == "ready":
                self.ready.set()
            elif words[0] == "published":
                count, cpu = words[1].split(" ")
                self._published, self._cpu_s = int(count), float(cpu)
            elif words[0] == "failed":
                self._failed = RuntimeError(words[1])
        code = process.wait()
        if code != 0 and self._failed is None and not self._stopped:
            self._failed = RuntimeError(f"the feed process exited with {code}")
        self.ready.set()
        self.finished.set()

    def stop(self) -> None:
        self._stopped = True
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()

    def join(self, timeout: float | None = None) -> None:
        if self._reader is not None:
            self._reader.join(timeout)
        if self._process is not None and self._process.poll() is None:
            self._stopped = True
            self._process.terminate()
            self._process.wait(5)


def _feed_main() -> None:
    """The feed process: publish the plan's ticks (read from stdin) until they end or stdin closes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    plan: FeedPlan = pickle.load(sys.stdin.buffer)
    out = sys.stdout
    publisher = EventPublisher(plan.bootstrap_servers, plan.ack_timeout_s)
    cpu_at_start = time.process_time()

    def report(count: int) -> None:
        out.write(f"published {count} {time.process_time() - cpu_at_start:.6f}\n")
        out.flush()

    feeder = FeedPublisher(
        plan.ticks(), publisher, plan.rate, plan.batch, stamper=TickStamper(plan.namespace), report=report
    )

    def watch_stop() -> None:
        sys.stdin.buffer.read()  # until the runner closes our stdin (or dies)
        feeder.stop()

    threading.Thread(target=watch_stop, daemon=True).start()
    try:
        out.write("ready\n")
        out.flush()
        feeder.run()
        if feeder.failed is not None:
            reason = f"{type(feeder.failed).__name__}: {feeder.failed}".replace("\n", " ")
            out.write(f"failed {reason}\n")
    finally:
        publisher.close()
        report(feeder.published)
        os._exit(0)  # nothing else of this process (client threads) may hold up its end


if __name__ == "__main__":
    _feed_main()

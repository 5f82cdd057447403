"""The market feed in its own process (`FeedProcess`, as `alphapanda run` starts it) on the real
broker: the same tick events (same ids) as the in-process `FeedPublisher`, its count, its stop,
and a failing source reported with its reason."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from alphapanda.bus.kafka import ensure_topics
from alphapanda.bus.log import read_log
from alphapanda.domain.instruments import load_instruments
from alphapanda.events import IST
from alphapanda.feed import TickStamper, read_ticks_csv, write_ticks_csv
from alphapanda.runtime.embedded import EmbeddedKafka
from alphapanda.runtime.feed import FeedPlan, FeedProcess, fixed_simulation
from alphapanda.topics import market_ticks

TOPIC = market_ticks("equity")
START = datetime(2026, 1, 5, 9, 15, tzinfo=IST)


def _plan(kafka: EmbeddedKafka, **fields: object) -> FeedPlan:
    return FeedPlan(kafka.bootstrap_servers, 10.0, **fields)  # type: ignore[arg-type]


def test_feed_process_when_a_file_is_replayed_then_it_publishes_the_ticks_feed_publisher_would(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ticks.csv"
    write_ticks_csv(path, fixed_simulation(load_instruments()[:3], 5, START, 1_200))
    with EmbeddedKafka() as kafka:
        ensure_topics(kafka.bootstrap_servers, [TOPIC], 2)
        feed = FeedProcess(_plan(kafka, rate=0.0, replay=path))
        feed.start()
        feed.join(120)

        assert feed.finished.is_set() and feed.failed is None
        assert feed.published == 1_200
        got = [r.event for r in read_log(kafka.bootstrap_servers, [TOPIC]) if r.event is not None]
    stamper = TickStamper()
    expected = [stamper.stamp(t) for t in read_ticks_csv(path)]
    assert sorted((e.id, e.data) for e in got) == sorted((e.id, e.data) for e in expected)
    assert feed.cpu_s > 0


def test_feed_process_when_stopped_then_it_ends_and_its_count_is_what_the_broker_holds() -> None:
    with EmbeddedKafka() as kafka:
        ensure_topics(kafka.bootstrap_servers, [TOPIC], 1)
        feed = FeedProcess(_plan(kafka, rate=200.0, instruments=tuple(load_instruments()[:2])))
        feed.start()
        assert feed.ready.wait(60)
        while feed.published < 20 and not feed.finished.is_set():
            feed.finished.wait(0.05)
        feed.stop()
        feed.join(60)

        assert feed.finished.is_set() and feed.failed is None
        held = sum(1 for r in read_log(kafka.bootstrap_servers, [TOPIC]) if r.event is not None)
    assert feed.published >= 20
    assert held == feed.published


def test_feed_process_when_the_tick_file_is_bad_then_it_fails_with_the_files_reason(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    write_ticks_csv(path, fixed_simulation(load_instruments()[:1], 5, START, 3))
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[4], "not-a-time")
    path.write_text("\n".join(lines) + "\n")
    with EmbeddedKafka() as kafka:
        ensure_topics(kafka.bootstrap_servers, [TOPIC], 1)
        feed = FeedProcess(_plan(kafka, rate=0.0, replay=path))
        feed.start()
        feed.join(120)

    assert feed.finished.is_set()
    assert feed.failed is not None
    assert "line 3" in str(feed.failed) and "not-a-time" in str(feed.failed)

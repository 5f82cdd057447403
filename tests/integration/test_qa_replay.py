"""`alphapanda replay` as a demanding user drives it, on the real Tansu broker (and, where the
pipeline trades, a real redis-server): the --from window, bad input, bad records, several
partitions, a replay beside live trading, an unreachable or vanishing broker."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pipeline_harness import FAST_CROSS, Pipeline, settings_for, state_snapshot, tick_events, write_strategies

from alphapanda import topics
from alphapanda.bus.kafka import EventPublisher, ensure_topics, to_kafka
from alphapanda.bus.log import read_log
from alphapanda.events import Event, MarketTick
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from alphapanda.runtime.replay import ReplayError, invalid_note, replay, replay_id
from signal_events import raw_signal_event

pytestmark = pytest.mark.integration

TICKS = topics.market_ticks("equity")
BROKER = "paper-replay"


def _ticks(tmp_path: Path, count: int, instruments: int) -> list[Event]:
    # Building ticks needs the instruments only: nothing connects to this Redis URL.
    settings = settings_for("127.0.0.1:1", "redis://127.0.0.1:1", write_strategies(tmp_path))
    return tick_events(settings, count, instruments)


def _record(kafka: EmbeddedKafka, ticks: list[Event], partitions: int = 3) -> None:
    ensure_topics(kafka.bootstrap_servers, [TICKS], partitions)
    publisher = EventPublisher(kafka.bootstrap_servers, 10)
    try:
        publisher.publish(ticks)
    finally:
        publisher.close()


def _replay(kafka: EmbeddedKafka, start: datetime | int, **kw: object):  # type: ignore[no-untyped-def]
    publisher = EventPublisher(kafka.bootstrap_servers, 10)
    try:
        return replay(kafka.bootstrap_servers, publisher, topic=TICKS, start=start, broker=BROKER, **kw)  # type: ignore[arg-type]
    finally:
        publisher.close()


def _replayed(kafka: EmbeddedKafka) -> list[Event]:
    """The replayed ticks on the log, in partition order."""
    return [
        r.event for r in read_log(kafka.bootstrap_servers, [TICKS]) if r.event and r.event.broker == BROKER
    ]


def _time(event: Event) -> datetime:
    assert isinstance(event.data, MarketTick)
    return event.data.exchange_timestamp


def test_qa_replay_when_from_is_a_tick_time_mid_session_then_only_ticks_from_that_time_are_replayed(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    # --from is a tick time, like --to (and like backtest --from/--to): the records' own Kafka
    # timestamps (when they were published) say nothing about which ticks a session window holds.
    ticks = _ticks(tmp_path, 60, 4)
    _record(kafka, ticks)
    at = _time(ticks[30])  # exactly a recorded tick's time: inclusive
    result = _replay(kafka, at)
    want = {replay_id(t.id, BROKER) for t in ticks if _time(t) >= at}
    assert 0 < len(want) < len(ticks)
    assert {e.id for e in _replayed(kafka)} == want
    assert (result.read, result.published, result.skipped) == (len(want), len(want), 0)


def test_qa_replay_when_from_is_the_same_instant_in_another_timezone_then_the_same_ticks_are_replayed(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    ticks = _ticks(tmp_path, 60, 4)
    _record(kafka, ticks)
    at_utc = _time(ticks[30]).astimezone(UTC)
    result = _replay(kafka, at_utc)
    want = {replay_id(t.id, BROKER) for t in ticks if _time(t) >= at_utc}
    assert {e.id for e in _replayed(kafka)} == want
    assert result.published == len(want)


def test_qa_replay_when_from_is_before_the_first_tick_then_all_and_after_the_last_then_none(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    ticks = _ticks(tmp_path, 40, 4)
    _record(kafka, ticks)
    after = _replay(kafka, _time(ticks[-1]) + timedelta(seconds=1))
    # Tansu answers offset 0 for a time after every record: the replay must not trust it.
    assert (after.read, after.published) == (0, 0)
    assert _replayed(kafka) == []
    before = _replay(kafka, _time(ticks[0]) - timedelta(hours=1))
    assert before.published == len(ticks)
    assert {e.id for e in _replayed(kafka)} == {replay_id(t.id, BROKER) for t in ticks}


def test_qa_replay_when_a_time_has_no_zone_or_an_offset_is_negative_then_it_is_refused_before_any_work(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    ticks = _ticks(tmp_path, 20, 2)
    _record(kafka, ticks)
    naive = _time(ticks[5]).replace(tzinfo=None)
    with pytest.raises(ReplayError, match="no timezone"):
        _replay(kafka, naive)
    with pytest.raises(ReplayError, match="no timezone"):
        _replay(kafka, 0, end=naive)  # before: a TypeError mid-replay
    with pytest.raises(ReplayError, match="0 or more"):
        _replay(kafka, -1)  # before: OFFSET_END, nothing replayed and nothing said
    with pytest.raises(ReplayError, match="0 or more"):
        _replay(kafka, -2)  # OFFSET_BEGINNING to librdkafka
    assert _replayed(kafka) == []


def test_qa_replay_when_the_offset_is_beyond_the_log_end_then_it_says_so(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    ticks = _ticks(tmp_path, 30, 3)
    _record(kafka, ticks)
    with pytest.raises(ReplayError, match=r"beyond the end of market\.equity\.ticks"):
        _replay(kafka, 1_000_000)
    assert _replayed(kafka) == []


def test_qa_replay_when_the_topic_does_not_exist_then_it_says_so_and_creates_nothing(
    kafka: EmbeddedKafka,
) -> None:
    publisher = EventPublisher(kafka.bootstrap_servers, 10)
    try:
        with pytest.raises(ReplayError, match="no such topic"):
            replay(kafka.bootstrap_servers, publisher, topic="market.nope.ticks", start=0, broker=BROKER)
    finally:
        publisher.close()
    assert [r for r in read_log(kafka.bootstrap_servers, ["market.nope.ticks"])] == []


def test_qa_replay_when_the_topic_has_several_partitions_then_all_are_replayed_in_order_per_instrument(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    # Four partitions, six instruments: some partitions may hold none, and must not stall the replay.
    ticks = _ticks(tmp_path, 600, 6)
    _record(kafka, ticks, partitions=4)
    started = time.monotonic()
    calls: list[int] = []
    result = _replay(kafka, 0, progress=calls.append)
    elapsed = time.monotonic() - started
    assert result.published == len(ticks)
    replayed = _replayed(kafka)
    per_token: dict[str, list[str]] = defaultdict(list)
    for e in replayed:
        per_token[str(e.partitionkey)].append(str(e.causationid))
    recorded: dict[str, list[str]] = defaultdict(list)
    for t in ticks:
        recorded[str(t.partitionkey)].append(t.id)
    assert per_token == recorded
    assert sum(calls) == result.read
    assert elapsed < 5, f"the replay waited {elapsed:.1f}s for partitions that hold nothing"


def test_qa_replay_when_records_are_not_live_ticks_then_each_is_reported_with_its_reason(
    kafka: EmbeddedKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = _ticks(tmp_path, 10, 2)
    _record(kafka, ticks[:5])
    key, _value, headers = to_kafka(ticks[5])
    bad_data = [(k, v) for k, v in headers if k != "ce_id"] + [("ce_id", b"bad-data-1")]
    signal = raw_signal_event(1, token=int(ticks[0].partitionkey or 0))
    live_named = replace(ticks[6], id="named-1", broker="paper")
    records = [
        (TICKS, b"738561", b"{not json", [("content-type", b"text/plain")]),
        (TICKS, key, b'{"last_price": "-3"}', bad_data),
        (TICKS, *to_kafka(signal)),
        (TICKS, *to_kafka(live_named)),
    ]
    publisher = EventPublisher(kafka.bootstrap_servers, 10)
    try:
        publisher.publish_records(records)
        publisher.publish(ticks[7:])
    finally:
        publisher.close()
    with caplog.at_level(logging.WARNING, logger="alphapanda.runtime.replay"):
        result = _replay(kafka, 0)
    assert result.published == 8
    assert (result.read, result.skipped) == (12, 4)
    reasons = [r.reason for r in result.invalid]
    assert len(reasons) == 4 and all(reasons), reasons
    assert any("CloudEvent" in r for r in reasons)
    assert any("signal" in r for r in reasons)
    assert any("'paper'" in r for r in reasons)
    assert len([m for m in caplog.messages if "is not a live tick" in m]) == 4
    # What the command prints about them: the count, and the first ones with partition, offset, reason.
    note = invalid_note(result, TICKS, shown=2)
    assert note is not None
    assert note.startswith(f"4 records of {TICKS} were not live ticks and were not replayed")
    first = result.invalid[0]
    assert f"partition {first.partition} offset {first.offset}: {first.reason}" in note
    assert note.endswith("; and 2 more)")
    assert invalid_note(replace(result, invalid=()), TICKS) is None


CLI = "from alphapanda.cli import main; raise SystemExit(main())"


def _replay_command_without_a_broker(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "ALPHAPANDA_REDIS__URL": f"redis://127.0.0.1:{free_port()}",
        "ALPHAPANDA_BROKERS": "paper,paper-replay",
        "XDG_RUNTIME_DIR": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "-c", CLI, "replay", "--from", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_qa_replay_when_the_broker_is_unreachable_then_the_command_ends_with_one_clear_line(
    tmp_path: Path,
) -> None:
    # Before: a KafkaException traceback, exit code 1.
    done = _replay_command_without_a_broker(tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[-1].startswith("alphapanda: cannot read market.equity.ticks from Kafka at "), lines[-1]


def test_qa_replay_when_the_broker_is_unreachable_then_the_command_prints_only_that_line(
    tmp_path: Path,
) -> None:
    done = _replay_command_without_a_broker(tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr


def test_qa_replay_when_the_broker_goes_away_mid_replay_then_it_fails_with_a_reason(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    ticks = _ticks(tmp_path, 6000, 4)
    _record(kafka, ticks)
    publisher = EventPublisher(kafka.bootstrap_servers, 3)
    started = time.monotonic()
    try:
        with pytest.raises(ReplayError, match="running the same replay again is safe"):
            replay(
                kafka.bootstrap_servers,
                publisher,
                topic=TICKS,
                start=0,
                broker=BROKER,
                progress=lambda _n: kafka.stop(),
            )
    finally:
        publisher._producer = None  # type: ignore[assignment]  # its broker is gone: nothing to flush
    assert time.monotonic() - started < 40


# --- beside live trading ---------------------------------------------------------------------------

BROKERS = ("paper", BROKER)


def _live(state: dict[str, str]) -> dict[str, object]:
    """The live broker's state as far as it is reproducible: paper fills take the quote when the
    order arrives, so two runs of the same ticks differ in fill prices, cash, PnL and even the
    number of trades (measured: with no replay at all, 32 or 34). Quotes, indicators and position
    sizes do not; a replayed tick leaking into live state would move them, and the causation
    check in `_trade` catches any live output of a replayed tick. The matcher's last tick
    (`paper:paper:market:*`) keeps which tick it is, not its depth: what is left of that depth
    depends on whether the last orders met that tick or the quote before it, the same race."""
    out: dict[str, object] = {}
    for k, v in state.items():
        if k.startswith(f"{BROKER}:"):
            continue
        if k.startswith("paper:book:"):
            book = json.loads(v)
            out[k] = {t: p["q"] for t, p in book["positions"].items()}
        elif k.startswith("paper:risk:strategy:"):
            out[k] = {t: q for t, (q, _notional) in json.loads(v).items()}
        elif k.startswith("paper:paper:market:"):
            out[k] = {f: x for f, x in json.loads(v).items() if f not in ("bids", "asks")}
        elif k.startswith(("paper:account", "paper:pnl:", "paper:risk:notional:", "paper:risk:gross")):
            out[k] = None  # fill-price dependent: present, value not compared
        else:
            out[k] = v
    return out


def _trade(
    kafka: EmbeddedKafka,
    redis_server: EmbeddedRedis,
    strategies: Path,
    ticks: list[Event],
    *,
    with_replay: bool,
) -> tuple[dict[str, object], dict[str, object], list[int], object]:
    """Trade `ticks` live in two halves; with a replay of the log running while the second half
    is traded. Return the live state, the live state before the second half, progress calls, result."""
    settings = settings_for(kafka.bootstrap_servers, redis_server.url, strategies, brokers=BROKERS)
    half = len(ticks) // 2
    calls: list[int] = []
    result = None
    with Pipeline(settings) as pipeline:
        pipeline.publish(ticks[:half])
        pipeline.drain()
        before = _live(state_snapshot(pipeline.redis))

        def feed() -> None:
            for i in range(half, len(ticks), 8):
                pipeline.publish(ticks[i : i + 8])
                time.sleep(0.01)

        feeder = threading.Thread(target=feed)
        feeder.start()
        if with_replay:
            result = replay(
                kafka.bootstrap_servers,
                pipeline.publisher,
                topic=TICKS,
                start=0,
                broker=BROKER,
                progress=calls.append,
            )
        feeder.join()
        pipeline.drain()
        live = _live(state_snapshot(pipeline.redis))
    live_signals = [
        r.event
        for r in read_log(kafka.bootstrap_servers, [topics.signals_raw("paper")])
        if r.event is not None
    ]
    # No live output was caused by a replayed tick: every live signal comes from a live tick.
    assert {e.causationid for e in live_signals} <= {t.id for t in ticks}
    return live, before, calls, result


def test_qa_replay_when_the_live_broker_trades_during_a_replay_then_its_state_is_as_without_the_replay(
    kafka: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    strategies = tmp_path / "strategies.yaml"
    strategies.write_text(FAST_CROSS.replace("brokers: [paper]", "brokers: [paper, paper-replay]"))
    ticks = _ticks(tmp_path, 240, 4)
    live, before, calls, result = _trade(kafka, redis_server, strategies, ticks, with_replay=True)
    with EmbeddedKafka() as ref_kafka, EmbeddedRedis() as ref_redis:
        reference, ref_before, _, _ = _trade(ref_kafka, ref_redis, strategies, ticks, with_replay=False)
    assert before == ref_before
    assert live != before, "the live broker should have traded the second half"
    assert live == reference
    assert result is not None
    assert result.published >= len(ticks) // 2  # type: ignore[attr-defined]
    # Progress counts what the replay read, not the live ticks recorded after it started.
    assert sum(calls) == result.read  # type: ignore[attr-defined]

"""Replay a recorded session from the Kafka log into the running pipeline, for a replay broker.

Each recorded live tick is published again on its own topic with
- a new id derived from the old one and the replay broker (so re-running the same replay is
  idempotent: the stages' claims drop what an interrupted earlier run already published), which
  is also the root of a new correlation namespace (correlationid = the new id, causationid = the
  recorded tick);
- the broker extension set to the replay broker. Stages that consume ticks give such a tick to
  that broker only and keep its indicators and quotes under the broker's scope
  (`topics.market_scope`), while live brokers ignore it: a replay never reads or moves live state.

Ticks already carrying a replay broker (an earlier replay's) are skipped, so replays do not
compound. Records that are not live ticks (not a CloudEvent, bad data, another event type, a
tick naming a live broker) are skipped too and reported with their reason in
`ReplayResult.invalid` (and logged): the live pipeline dead-letters them to `T.dlq` when it
consumes them, so the replay does not dead-letter them a second time.

The window is in tick time, like `alphapanda backtest --from/--to`: a time `start` selects the
ticks whose exchange timestamp is at or after it. The log is sought by record time (the broker's
`offsets_for_times`) only to skip what is surely earlier, a margin before `start`; every tick is
then checked by its own time. An offset `start` is a log offset in every partition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from alphapanda.bus.kafka import EventPublisher, PublishError, from_kafka
from alphapanda.events import Event, EventType, InvalidEvent, MarketTick, derive_id
from alphapanda.topics import REPLAY_SUFFIX, broker_kind, is_replay_broker, validate_broker_name

log = logging.getLogger(__name__)


class ReplayError(ValueError):
    pass


@dataclass(frozen=True)
class InvalidRecord:
    """A record in the replay window that is not a live tick, and why."""

    partition: int
    offset: int
    reason: str


@dataclass(frozen=True)
class ReplayResult:
    read: int
    """Records in the window: from `start` to the log's end at call time (or tick time `end`)."""
    published: int
    skipped: int
    """Records read but not published: earlier replays' ticks, ticks at or after `end`, `invalid`."""
    invalid: tuple[InvalidRecord, ...] = ()


def invalid_note(result: ReplayResult, topic: str, shown: int = 3) -> str | None:
    """One line on the records of the window that were not live ticks (the first few, with their
    reason), or None: they were not replayed, and the live pipeline dead-lettered them already."""
    invalid = result.invalid
    if not invalid:
        return None
    first = "; ".join(f"partition {r.partition} offset {r.offset}: {r.reason}" for r in invalid[:shown])
    more = f"; and {len(invalid) - shown:,} more" if len(invalid) > shown else ""
    return f"{len(invalid):,} records of {topic} were not live ticks and were not replayed ({first}{more})"


def replay_id(old_id: str, broker: str) -> str:
    """The replayed tick's id: derived from the recorded one, in the replay broker's namespace."""
    return derive_id(old_id, "replay", broker)


def check_replay_broker(broker: str) -> None:
    """Refuse a broker a replay may not feed: only paper replay brokers (`paper-replay`)."""
    validate_broker_name(broker)
    if not is_replay_broker(broker):
        raise ReplayError(
            f"--broker {broker}: a replay goes to a replay broker, named *{REPLAY_SUFFIX} "
            "(e.g. paper-replay), so that it never touches a live broker's state"
        )
    if broker_kind(broker) != "paper":
        raise ReplayError(f"--broker {broker}: a replay trades a paper broker only (e.g. paper-replay)")


def check_window(start: datetime | int, end: datetime | None) -> None:
    """Refuse a window the replay cannot read: a negative offset, a time without its zone."""
    if isinstance(start, bool) or not isinstance(start, (int, datetime)):
        raise ReplayError(f"--from {start!r}: give a time with its zone or a log offset (0 or more)")
    if isinstance(start, int) and start < 0:
        raise ReplayError(f"--from {start}: a log offset is 0 or more")
    for name, at in (("--from", start), ("--to", end)):
        if isinstance(at, datetime) and at.utcoffset() is None:
            raise ReplayError(f"{name} {at.isoformat()} has no timezone (e.g. 2026-01-05T09:15:00+05:30)")
    if isinstance(start, datetime) and end is not None and end <= start:
        raise ReplayError(
            f"--to {end.isoformat()} is not after --from {start.isoformat()}: the window holds no tick"
        )


def replay_tick(event: Event, broker: str) -> Event:
    new_id = replay_id(event.id, broker)
    return replace(event, id=new_id, correlationid=new_id, causationid=event.id, broker=broker)


SEEK_MARGIN = timedelta(minutes=5)
"""How far before a time `start` the log is sought by record time: a tick's record may carry a
time a little before its exchange timestamp (the producer's clock behind the exchange's)."""

_REPORTED = 20
"""Invalid records logged one by one; the rest are counted in the result only."""


def replay(
    bootstrap: str,
    publisher: EventPublisher,
    *,
    topic: str,
    start: datetime | int,
    broker: str,
    end: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    timeout_s: float = 10.0,
) -> ReplayResult:
    """Publish the live ticks of `topic` from `start` (a tick time or a log offset) up to the log's
    end at call time, or to tick time `end` (exclusive), again for `broker`.

    Raise `ReplayError` with one line saying what is wrong: a bad window, a missing topic, an
    offset beyond the log's end, an unreachable broker, a log that stopped answering."""
    check_replay_broker(broker)
    check_window(start, end)
    try:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"alphapanda-replay-{broker}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
                "log_level": 0,
            }
        )
    except KafkaException as exc:
        raise ReplayError(f"Kafka at {bootstrap!r}: {_reason(exc)}") from None
    try:
        return _replay(consumer, bootstrap, publisher, topic, start, broker, end, progress, timeout_s)
    except KafkaException as exc:
        raise ReplayError(f"cannot read {topic} from Kafka at {bootstrap}: {_reason(exc)}") from None
    finally:
        consumer.close()


def _replay(
    consumer: Consumer,
    bootstrap: str,
    publisher: EventPublisher,
    topic: str,
    start: datetime | int,
    broker: str,
    end: datetime | None,
    progress: Callable[[int], None] | None,
    timeout_s: float,
) -> ReplayResult:
    meta = consumer.list_topics(topic, timeout=timeout_s)
    if topic not in meta.topics or meta.topics[topic].error is not None:
        raise ReplayError(f"--topic {topic}: no such topic on {bootstrap}")
    partitions = sorted(meta.topics[topic].partitions)
    if isinstance(start, int):
        starts = [TopicPartition(topic, p, start) for p in partitions]
    else:
        seek_ms = int((start - SEEK_MARGIN).timestamp() * 1000)
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, seek_ms) for p in partitions], timeout=timeout_s
        )
        # -1: no record at or after that time (Kafka); Tansu answers 0 then, which only costs a scan.
        starts = [tp for tp in found if tp.offset >= 0]
    start_at = start if isinstance(start, datetime) else None
    consumer.assign(starts)
    # The log's end when the replay starts, per partition: the high watermark the first fetch
    # response carries (Tansu's ListOffsets answers in record batches, not records, so it
    # cannot be asked up front). A session still being recorded is replayed up to there.
    ends: dict[int, int] = {}
    first = {tp.partition: tp.offset for tp in starts}
    positions = dict(first)
    read = published = skipped = 0
    invalid: list[InvalidRecord] = []
    idle_polls = 0
    while idle_polls < _IDLE_POLLS and not _caught_up(positions, ends):
        batch = consumer.consume(1000, timeout=0.5)
        for tp in starts:
            if tp.partition not in ends:
                high = consumer.get_watermark_offsets(tp, cached=True)[1]
                if high >= 0:
                    ends[tp.partition] = high
        records = [m for m in batch if not m.error() and m.partition() is not None and m.offset() is not None]
        idle_polls = 0 if records else idle_polls + 1
        out: list[Event] = []
        in_window = 0
        for msg in records:
            partition, offset = int(msg.partition()), int(msg.offset())  # type: ignore[arg-type]
            if offset < first[partition]:
                continue  # a fetch answers from its batch's start
            positions[partition] = offset + 1
            if offset >= ends.get(partition, offset + 1):
                continue  # recorded after the replay started
            event, reason = _decode(msg.key(), msg.value(), msg.headers())
            tick = event.data if event is not None and isinstance(event.data, MarketTick) else None
            if start_at is not None:
                # Sought by record time, checked by tick time; a record without one by its record time.
                if tick is not None:
                    before = tick.exchange_timestamp < start_at
                else:
                    before = msg.timestamp()[1] < int(start_at.timestamp() * 1000)
                if before:
                    continue
            read += 1
            in_window += 1
            if reason is not None:
                skipped += 1
                if reason:
                    invalid.append(InvalidRecord(partition, offset, reason))
                    if len(invalid) <= _REPORTED:
                        log.warning(
                            "replay: %s[%d]@%d is not a live tick: %s", topic, partition, offset, reason
                        )
                continue
            assert event is not None and tick is not None
            if end is not None and tick.exchange_timestamp >= end:
                skipped += 1
                continue
            out.append(replay_tick(event, broker))
        if out:
            try:
                publisher.publish(out)
            except PublishError as exc:
                raise ReplayError(
                    f"publishing replayed ticks to {topic} failed after {published:,} were published: {exc} "
                    "(running the same replay again is safe: replayed ids are the same)"
                ) from None
            published += len(out)
        if progress is not None and in_window:
            progress(in_window)
    short = sorted(p for p in positions if p not in ends or positions[p] < ends[p])
    if short:
        where = ", ".join(
            f"partition {p} at offset {positions[p]}" + (f" of {ends[p]}" if p in ends else "") for p in short
        )
        raise ReplayError(
            f"the log of {topic} on {bootstrap} stopped answering short of its end ({where}) after "
            f"{published:,} ticks were published; running the same replay again is safe"
        )
    if isinstance(start, int) and start > 0 and ends and all(start >= ends[p] for p in ends):
        sizes = ", ".join(f"partition {p}: {ends[p]}" for p in sorted(ends))
        raise ReplayError(f"--from {start}: beyond the end of {topic} (records per partition: {sizes})")
    if len(invalid) > _REPORTED:
        log.warning("replay: %d more records of %s are not live ticks", len(invalid) - _REPORTED, topic)
    return ReplayResult(read, published, skipped, tuple(invalid))


def _decode(key: bytes | None, value: bytes | None, headers: Any) -> tuple[Event | None, str | None]:
    """The record's event (None if it is not one) and why it is not a live tick to replay."""
    try:
        event = from_kafka(key, value, headers)
    except InvalidEvent as exc:
        return None, str(exc)
    return event, _not_a_live_tick(event)


def _not_a_live_tick(event: Event) -> str | None:
    """Why `event` is not a recorded live tick to replay: a reason, "" for an earlier replay's
    tick (skipped, not reported), None for a live tick."""
    if event.type is not EventType.MARKET_TICK or not isinstance(event.data, MarketTick):
        return f"a {event.type} event on the ticks topic, not a market tick"
    if event.broker is None:
        return None
    if is_replay_broker(event.broker):
        return ""
    return f"tick {event.id} names live broker {event.broker!r}: recorded live ticks name no broker"


def _reason(exc: KafkaException) -> str:
    err: Any = exc.args[0] if exc.args else None
    text = err.str() if isinstance(err, KafkaError) else str(exc)
    return f"{text} (is it running? check ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS, or start `alphapanda run`)"


_IDLE_POLLS = 10
"""Consecutive half-second polls without a record after which the log is taken to have stopped."""


def _caught_up(positions: dict[int, int], ends: dict[int, int]) -> bool:
    return len(ends) == len(positions) and all(positions[p] >= ends[p] for p in positions)

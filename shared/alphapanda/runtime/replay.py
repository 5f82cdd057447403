"""Replay a recorded session from the Kafka log into the running pipeline, for a replay broker.

Each recorded live tick is published again on its own topic with
- a new id derived from the old one and the replay broker (so re-running the same replay is
  idempotent: the stages' claims drop what an interrupted earlier run already published), which
  is also the root of a new correlation namespace (correlationid = the new id, causationid = the
  recorded tick);
- the broker extension set to the replay broker. Stages that consume ticks give such a tick to
  that broker only and keep its indicators and quotes under the broker's scope
  (`topics.market_scope`), while live brokers ignore it: a replay never reads or moves live state.

Ticks already carrying a broker (an earlier replay's) are skipped, so replays do not compound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition

from alphapanda.bus.kafka import EventPublisher, from_kafka
from alphapanda.events import Event, EventType, InvalidEvent, MarketTick, derive_id
from alphapanda.topics import REPLAY_SUFFIX, broker_kind, is_replay_broker, validate_broker_name


class ReplayError(ValueError):
    pass


@dataclass(frozen=True)
class ReplayResult:
    read: int
    published: int
    skipped: int


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


def replay_tick(event: Event, broker: str) -> Event:
    new_id = replay_id(event.id, broker)
    return replace(event, id=new_id, correlationid=new_id, causationid=event.id, broker=broker)


def replay(
    bootstrap: str,
    publisher: EventPublisher,
    *,
    topic: str,
    start: datetime | int,
    broker: str,
    end: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Publish the live ticks of `topic` from `start` (a time or a log offset) up to the log's
    end at call time, or to tick time `end` (exclusive), again for `broker`."""
    check_replay_broker(broker)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"alphapanda-replay-{broker}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    read = published = skipped = 0
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise ReplayError(f"--topic {topic}: no such topic on {bootstrap}")
        partitions = sorted(meta.topics[topic].partitions)
        if isinstance(start, int):
            starts = [TopicPartition(topic, p, start) for p in partitions]
        else:
            at_ms = int(start.timestamp() * 1000)
            starts = consumer.offsets_for_times(
                [TopicPartition(topic, p, at_ms) for p in partitions], timeout=10
            )
        assigned = [tp for tp in starts if tp.offset >= 0]
        consumer.assign(assigned)
        # The log's end when the replay starts, per partition: the high watermark the first fetch
        # response carries (Tansu's ListOffsets answers in record batches, not records, so it
        # cannot be asked up front). A session still being recorded is replayed up to there.
        ends: dict[int, int] = {}
        positions = {tp.partition: tp.offset for tp in assigned}
        idle_polls = 0
        while idle_polls < _IDLE_POLLS and not _caught_up(positions, ends):
            batch = consumer.consume(1000, timeout=0.5)
            for tp in assigned:
                if tp.partition not in ends:
                    high = consumer.get_watermark_offsets(tp, cached=True)[1]
                    if high >= 0:
                        ends[tp.partition] = high
            idle_polls = 0 if batch else idle_polls + 1
            out: list[Event] = []
            for msg in batch:
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                positions[partition] = offset + 1
                if offset >= ends.get(partition, offset + 1):
                    continue  # recorded after the replay started
                read += 1
                try:
                    event = from_kafka(msg.key(), msg.value(), msg.headers())  # type: ignore[arg-type]
                except InvalidEvent:
                    skipped += 1  # a record the live pipeline dead-lettered too
                    continue
                if event.type is not EventType.MARKET_TICK or event.broker is not None:
                    skipped += 1  # not a recorded live tick (e.g. an earlier replay's)
                    continue
                tick = event.data
                assert isinstance(tick, MarketTick)
                if end is not None and tick.exchange_timestamp >= end:
                    skipped += 1
                    continue
                out.append(replay_tick(event, broker))
            if out:
                publisher.publish(out)
                published += len(out)
            if progress is not None:
                progress(len(batch))
    finally:
        consumer.close()
    return ReplayResult(read, published, skipped)


_IDLE_POLLS = 10
"""Consecutive empty half-second polls after which a partition that never answered is given up."""


def _caught_up(positions: dict[int, int], ends: dict[int, int]) -> bool:
    return len(ends) == len(positions) and all(positions[p] >= ends[p] for p in positions)

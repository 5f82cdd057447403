"""Read the event log: every record of some topics, from the beginning to the current end."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from alphapanda.bus.kafka import from_kafka
from alphapanda.events import Event, InvalidEvent


@dataclass(frozen=True)
class LogRecord:
    topic: str
    partition: int
    offset: int
    event: Event | None
    """None when the record is not a valid event (its reason is in `error`)."""
    error: str = ""


def partition_end(consumer: Consumer, partition: tuple[str, int], listed: int) -> int:
    """Where a partition's records end, as far as `consumer` knows.

    ListOffsets (`listed`, from `get_watermark_offsets`) tells only whether a partition holds
    records: Tansu answers its last record batch's first offset + 1 (5 records in one batch: 1).
    Once a fetch of the partition came back, its high watermark (`cached`) says where they end.
    """
    return max(listed, consumer.get_watermark_offsets(TopicPartition(*partition), cached=True)[1])


def read_log(bootstrap_servers: str, topics: Sequence[str], timeout_s: float = 10.0) -> Iterator[LogRecord]:
    """Yield every record of `topics` that exists now, partition by partition, without joining a group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            # A throwaway group id: we assign partitions and never commit, so no group state is made.
            "group.id": f"alphapanda-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    try:
        meta = consumer.list_topics(timeout=timeout_s)
        parts = [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in topics
            if t in meta.topics
            for p in sorted(meta.topics[t].partitions)
        ]
        # Which partitions hold records; where they end is known after their first fetch.
        listed = {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=timeout_s)[1] for tp in parts
        }
        remaining = {k: v for k, v in listed.items() if v > 0}
        if not remaining:
            return
        ends: dict[tuple[str, int], int] = {}
        consumer.assign([tp for tp in parts if (tp.topic, tp.partition) in remaining])
        deadline = time.monotonic() + timeout_s
        while remaining:
            # consume() waits for a full batch or its timeout, so poll in short steps.
            batch = consumer.consume(1000, timeout=0.2)
            if not batch:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the log stopped short of its end: {sorted(remaining)} unread")
                continue
            deadline = time.monotonic() + timeout_s
            for m in batch:
                if m.error():
                    continue
                topic, part, offset = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
                # Consumed records carry a list of (name, bytes) pairs; the stubs allow more shapes.
                headers: Any = m.headers() or []
                raw_headers = [(str(k), v if isinstance(v, bytes) else b"") for k, v in headers]
                try:
                    yield LogRecord(topic, part, offset, from_kafka(m.key(), m.value(), raw_headers))
                except InvalidEvent as exc:
                    yield LogRecord(topic, part, offset, None, str(exc))
                key = (topic, part)
                end = ends.get(key)
                if end is None:
                    end = ends[key] = partition_end(consumer, key, listed[key])
                if offset + 1 >= end:
                    remaining.pop(key, None)
    finally:
        consumer.close()

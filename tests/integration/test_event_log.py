"""`read_log` on the real broker: every record to the log's end, however the records were batched."""

from __future__ import annotations

from confluent_kafka import Producer

from alphapanda.bus.kafka import ensure_topics
from alphapanda.bus.log import read_log
from alphapanda.runtime.embedded import EmbeddedKafka


def test_read_log_when_the_last_record_batch_is_larger_than_a_fetch_then_every_record_is_read() -> None:
    # Tansu's ListOffsets answers a partition's last record batch's first offset + 1, not its
    # end: a reader that stopped there lost the rest of that batch beyond its first fetch.
    with EmbeddedKafka() as kafka:
        ensure_topics(kafka.bootstrap_servers, ["log.a", "log.b"], 1)
        producer = Producer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "linger.ms": 2000,
                "batch.num.messages": 10_000,
                "batch.size": 10_000_000,
                "log_level": 3,
            }
        )
        for n in range(10):
            producer.produce("log.a", f"a{n}".encode())
            producer.flush()  # ten batches of one record
        for n in range(3_000):
            producer.produce("log.a", f"a{10 + n}".encode())
            producer.produce("log.b", f"b{n}".encode())
        producer.flush()  # one batch of 3,000 on each topic

        records = list(read_log(kafka.bootstrap_servers, ["log.a", "log.b", "missing"]))

    by_topic = {t: sorted(r.offset for r in records if r.topic == t) for t in ("log.a", "log.b")}
    assert by_topic == {"log.a": list(range(3_010)), "log.b": list(range(3_000))}
    # Not CloudEvents: each is yielded with its reason rather than dropped.
    assert all(r.event is None and r.error for r in records)

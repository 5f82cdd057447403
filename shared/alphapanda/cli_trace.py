"""`alphapanda trace CORRELATION_ID`: the lifecycle of one trading idea, read back from Kafka.

It reads every topic of the deployment (and their dead-letter topics) from the beginning,
keeps the events of the idea (`correlationid`) and the tick that caused it (the signals'
`causationid`), and prints them in time order across all brokers, each with the time since
the event that caused it (the hop) and since the first event.

A dead-lettered record that is not a readable event (a broken payload) is shown too: among the
idea's events if its headers name the idea, and otherwise counted, per dead-letter topic, under
the listing, since it may be an event of the idea that nobody can read any more.

The command is wired into `alphapanda` by `register` and `run`; `collect` and `render` are
the parts a test or another tool can call.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from alphapanda.bus.kafka import from_kafka
from alphapanda.cli_args import positive_number
from alphapanda.events import (
    IST,
    Alert,
    Event,
    InvalidEvent,
    MarketTick,
    OrderCancelled,
    OrderFailed,
    OrderFilled,
    OrderSubmitted,
    OrderUpdated,
    PnlSnapshot,
    Signal,
    SignalRejected,
    SignalValidated,
)
from alphapanda.topics import DLQ_SUFFIX, all_topics, signals_raw, validate_broker_name

COMMAND: Final = "trace"
_TYPE_PREFIX: Final = "com.alphapanda."
_DLQ_REASON_HEADER: Final = "ce_deadletterreason"


@dataclass(frozen=True, slots=True)
class Hop:
    """One event of a trading idea as it was found on a topic."""

    event: Event
    topic: str
    dead_letter_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A dead-lettered record that is not a readable event, as its headers describe it."""

    topic: str
    reason: str
    time: datetime | None
    """The `ce_time` header, else when Kafka got the record; None if neither is known."""
    event_id: str | None = None
    correlationid: str | None = None
    broker: str | None = None
    type: str | None = None


class Collected(NamedTuple):
    hops: list[Hop]
    unreadable: list[Unreadable]
    """Those of the idea (their headers name it) and those that name no idea at all."""
    complete: bool


class TraceError(RuntimeError):
    """Kafka could not be read; the message says why."""


# --- the command -------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `trace` command to the `alphapanda` parser."""
    parser = subparsers.add_parser(
        COMMAND,
        help="print the lifecycle of one trading idea (a correlationid) across all brokers",
        description="Read every topic of the deployment from Kafka and print the events of one trading "
        "idea, and the tick that caused it, in time order with the latency of each hop. Needs "
        "--bootstrap-servers or ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS.",
    )
    parser.add_argument("correlation_id", help="the idea's correlationid (CloudEvent extension)")
    parser.add_argument(
        "--bootstrap-servers",
        help="Kafka to read (default: ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS, else the running local run)",
    )
    parser.add_argument(
        "--brokers",
        help="comma list of brokers whose topics to read (default: every broker found on the cluster)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_number,
        default=60.0,
        help="give up reading after this many seconds (default 60)",
    )


def run(args: argparse.Namespace) -> int | None:
    """Run `alphapanda trace`; None when `args` are for another command."""
    if getattr(args, "command", None) != COMMAND:
        return None
    bootstrap = args.bootstrap_servers or _configured_bootstrap()
    if bootstrap is None:
        return 2
    if not bootstrap:
        print(
            "alphapanda: trace needs Kafka: "
            "pass --bootstrap-servers or set ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS",
            file=sys.stderr,
        )
        return 2
    try:
        brokers = [validate_broker_name(b.strip()) for b in (args.brokers or "").split(",") if b.strip()]
    except ValueError as exc:
        print(f"alphapanda: --brokers: {exc}", file=sys.stderr)
        return 2
    try:
        found = collect(bootstrap, args.correlation_id, brokers or None, timeout_s=args.timeout)
    except TraceError as exc:
        print(f"alphapanda: {exc}", file=sys.stderr)
        return 1
    if not found.complete:
        print(f"alphapanda: stopped reading after {args.timeout:g}s; the lifecycle may be incomplete")
    mine = [u for u in found.unreadable if u.correlationid == args.correlation_id]
    if not found.hops and not mine:
        print(f"no events with correlationid {args.correlation_id} on the topics at {bootstrap}")
        orphans = _orphans_line(found.unreadable)
        if orphans:
            print(orphans)
        return 1
    print(render(args.correlation_id, found.hops, found.unreadable))
    return 0


def _configured_bootstrap() -> str | None:
    """Kafka from settings, else the running local pipeline's; "" when neither; None on bad settings."""
    from alphapanda.config import ConfigError, load_settings
    from alphapanda.runtime.runinfo import resolve_endpoints

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"alphapanda: {exc}", file=sys.stderr)
        return None
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    try:
        return resolve_endpoints(settings).kafka.bootstrap_servers
    except ConfigError:
        return ""


# --- reading -----------------------------------------------------------------------------------


def collect(
    bootstrap: str, correlationid: str, brokers: Sequence[str] | None = None, *, timeout_s: float = 60.0
) -> Collected:
    """Return the events of `correlationid` and the ticks that caused them, the unreadable dead
    letters of the idea or of no idea, and whether every topic was read to its end in time.

    Broker topics are read first: only then is it known which ticks (the signals' causes) to
    pick from the market topics, which are far the largest, so they are filtered by id alone.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # assign() needs no group membership, but the client insists on a group id.
            "group.id": f"alphapanda-trace-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # Tansu answers a waiting fetch only when the wait is over: keep it short.
            "fetch.wait.max.ms": 10,
            "log_level": 3,
        }
    )
    deadline = time.monotonic() + timeout_s
    try:
        try:
            existing = set(consumer.list_topics(timeout=min(timeout_s, 15.0)).topics)
        except KafkaException as exc:
            raise TraceError(f"cannot read Kafka at {bootstrap}: {exc}") from None
        wanted = [t for t in all_topics(list(brokers or _brokers_on(existing))) if t in existing]
        market = [t for t in wanted if t.startswith("market.")]
        rest = [t for t in wanted if t not in market]
        cid = correlationid.encode()
        hops, unreadable, complete = _scan(
            consumer, rest, lambda h: h.get("ce_correlationid") == cid, deadline
        )
        causes = {h.event.causationid.encode() for h in hops} - {h.event.id.encode() for h in hops}
        ticks, unreadable_market, complete_market = _scan(
            consumer,
            market,
            lambda h: h.get("ce_correlationid") == cid or h.get("ce_id") in causes,
            deadline,
        )
        return Collected(_unique(ticks + hops), unreadable_market + unreadable, complete and complete_market)
    finally:
        consumer.close()


def _brokers_on(topics: Iterable[str]) -> list[str]:
    """The brokers a cluster has pipelines for: every `{broker}.signals.raw` topic names one."""
    suffix = signals_raw("")
    found = []
    for topic in sorted(topics):
        if topic.endswith(suffix) and not topic.endswith(DLQ_SUFFIX):
            try:
                found.append(validate_broker_name(topic[: -len(suffix)]))
            except ValueError:
                continue
    return found


def _scan(
    consumer: Consumer,
    topics: Sequence[str],
    keep: Callable[[dict[str, bytes]], bool],
    deadline: float,
) -> tuple[list[Hop], list[Unreadable], bool]:
    """The kept events of `topics`, the unreadable dead letters kept or naming no idea, and
    whether every partition was read to its end."""
    pending: set[tuple[str, int]] = set()
    assignment: list[TopicPartition] = []
    metadata = consumer.list_topics(timeout=15)
    for topic in topics:
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
            if high > low:
                pending.add((topic, partition))
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
    if not assignment:
        return [], [], True
    hops: list[Hop] = []
    unreadable: list[Unreadable] = []
    # Every consumer of a topic dead-letters the same poison record, so its copies are one
    # record: by id where it has one, else by its bytes.
    letters_seen: set[tuple[str, object]] = set()
    consumer.assign(assignment)
    try:
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((str(msg.topic()), int(msg.partition() or 0)))
                        continue
                    raise TraceError(f"cannot read {msg.topic()}: {err.str()}")
                # Consumed records carry a list of (name, bytes) pairs; the stubs allow more shapes.
                raw: Any = msg.headers() or []
                headers = {str(k): v for k, v in raw if isinstance(v, bytes)}
                topic = str(msg.topic())
                dead = topic.endswith(DLQ_SUFFIX)
                kept = keep(headers)
                # An unreadable dead letter naming no idea may be one of this idea's: look at
                # those too (dead-letter topics are small). Elsewhere a poison record is not
                # shown: its dead letter is.
                if not kept and not (dead and "ce_correlationid" not in headers):
                    continue
                reason = headers.get(_DLQ_REASON_HEADER)
                try:
                    event = from_kafka(msg.key(), msg.value(), list(headers.items()))
                except InvalidEvent as exc:
                    ce_id = headers.get("ce_id")
                    seen = (topic, ce_id if ce_id else (msg.key(), msg.value()))
                    if dead and seen not in letters_seen:
                        letters_seen.add(seen)
                        unreadable.append(_unreadable(topic, headers, msg.timestamp(), reason, exc))
                    continue
                if kept:
                    hops.append(Hop(event, topic, reason.decode() if reason else None))
    finally:
        consumer.unassign()
    return hops, unreadable, not pending


def _unreadable(
    topic: str,
    headers: dict[str, bytes],
    timestamp: tuple[int, int],
    reason: bytes | None,
    error: InvalidEvent,
) -> Unreadable:
    def text(name: str) -> str | None:
        raw = headers.get(name)
        return raw.decode(errors="replace") if raw else None

    return Unreadable(
        topic,
        reason.decode(errors="replace") if reason else str(error),
        _record_time(text("ce_time"), timestamp),
        text("ce_id"),
        text("ce_correlationid"),
        text("ce_broker"),
        text("ce_type"),
    )


def _record_time(ce_time: str | None, timestamp: tuple[int, int]) -> datetime | None:
    if ce_time:
        try:
            at = datetime.fromisoformat(ce_time.replace("Z", "+00:00"))
        except ValueError:
            at = None
        if at is not None and at.tzinfo is not None:
            return at
    kind, ms = timestamp
    if kind == 0 or ms < 0:  # TIMESTAMP_NOT_AVAILABLE
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


def _unique(hops: Iterable[Hop]) -> list[Hop]:
    # A redelivered input republishes its outputs with the same ids: show each event once per topic.
    seen: set[tuple[str, str]] = set()
    out = []
    for hop in hops:
        key = (hop.topic, hop.event.id)
        if key not in seen:
            seen.add(key)
            out.append(hop)
    return out


# --- printing ----------------------------------------------------------------------------------


def lifecycle(hops: Iterable[Hop]) -> list[Hop]:
    """`hops` in time order; an event never before its cause when their times are equal."""
    hops = list(hops)
    by_id = {h.event.id: h for h in hops}

    def depth(hop: Hop) -> int:
        n, seen, current = 0, {hop.event.id}, hop.event
        while current.causationid in by_id and current.causationid not in seen:
            seen.add(current.causationid)
            current = by_id[current.causationid].event
            n += 1
        return n

    return sorted(hops, key=lambda h: (h.event.time, depth(h)))


def render(correlationid: str, hops: Iterable[Hop], unreadable: Iterable[Unreadable] = ()) -> str:
    """The lifecycle as a table: time, hop latency, time since the first event, broker, topic, type, id.

    `unreadable` dead letters that name the idea are rows of it (in time order, where their
    time is known, else last); those that name no idea are counted below the table.
    """
    ordered = lifecycle(hops)
    letters = list(unreadable)
    mine = [u for u in letters if u.correlationid == correlationid]
    if not ordered and not mine:
        return f"no events with correlationid {correlationid}"
    by_id = {h.event.id: h.event for h in ordered}
    start = min(
        [h.event.time for h in ordered[:1]] + [u.time for u in mine if u.time is not None],
        default=None,
    )
    brokers = sorted(
        {h.event.broker for h in ordered if h.event.broker} | {u.broker for u in mine if u.broker}
    )
    header = ("time (IST)", "hop", "since first", "broker", "topic", "type", "event id", "detail")
    timed: list[tuple[datetime | None, tuple[str, ...]]] = []
    for hop in ordered:
        event = hop.event
        cause = by_id.get(event.causationid)
        timed.append(
            (
                event.time,
                (
                    _timestamp(event.time),
                    "-" if cause is None or cause is event else "+" + _duration(event.time - cause.time),
                    _duration(event.time - start) if start is not None else "-",
                    event.broker or "-",
                    hop.topic,
                    event.type.value.removeprefix(_TYPE_PREFIX),
                    event.id,
                    _detail(hop),
                ),
            )
        )
    rows = [header, *_merge(timed, [(u.time, _unreadable_row(u, start)) for u in mine])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    count = len(ordered) + len(mine)
    lines = [
        f"trading idea {correlationid}: {count} events" + (f" on {', '.join(brokers)}" if brokers else "")
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
    fills = _tick_to_fill(ordered)
    if fills:
        lines.append("tick to fill: " + ", ".join(f"{b} {d}" for b, d in fills))
    orphans = _orphans_line(letters)
    if orphans:
        lines.append(orphans)
    return "\n".join(line.rstrip() for line in lines)


def _merge(
    events: list[tuple[datetime | None, tuple[str, ...]]],
    letters: list[tuple[datetime | None, tuple[str, ...]]],
) -> list[tuple[str, ...]]:
    """The idea's rows (already in lifecycle order) with the unreadable ones put in by time."""
    out: list[tuple[str, ...]] = []
    pending = sorted((t, r) for t, r in letters if t is not None)
    untimed = [r for t, r in letters if t is None]
    for at, row in events:
        while pending and at is not None and pending[0][0] < at:
            out.append(pending.pop(0)[1])
        out.append(row)
    out += [r for _, r in pending] + untimed
    return out


def _unreadable_row(letter: Unreadable, start: datetime | None) -> tuple[str, ...]:
    return (
        _timestamp(letter.time) if letter.time is not None else "-",
        "-",
        _duration(letter.time - start) if letter.time is not None and start is not None else "-",
        letter.broker or "-",
        letter.topic,
        (letter.type or "unreadable").removeprefix(_TYPE_PREFIX),
        letter.event_id or "-",
        f"dead-lettered, unreadable: {letter.reason}",
    )


def _orphans_line(letters: Iterable[Unreadable]) -> str | None:
    """The unreadable dead letters that name no idea (one of them may have been of this one)."""
    per_topic = Counter(u.topic for u in letters if u.correlationid is None)
    if not per_topic:
        return None
    total = sum(per_topic.values())
    where = ", ".join(f"{n} on {t}" for t, n in sorted(per_topic.items()))
    return f"unreadable dead letters that name no trading idea: {total} ({where})"


def _tick_to_fill(ordered: Sequence[Hop]) -> list[tuple[str, str]]:
    ticks = [h.event for h in ordered if isinstance(h.event.data, MarketTick)]
    if not ticks:
        return []
    out: list[tuple[str, str]] = []
    for hop in ordered:
        data = hop.event.data
        if isinstance(data, OrderFilled) and hop.event.broker and not hop.topic.endswith(DLQ_SUFFIX):
            out.append((hop.event.broker, _duration(data.filled_at - ticks[0].time)))
    return sorted(out)


def _timestamp(at: datetime) -> str:
    return at.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{sign}{seconds:.3f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = f"{hours}h{minutes:02d}m{secs:02d}s" if hours or days else f"{minutes}m{secs:02d}s"
    return f"{sign}{days}d{text}" if days else f"{sign}{text}"


def _detail(hop: Hop) -> str:
    text = _describe(hop.event)
    if hop.dead_letter_reason is not None:
        return f"dead-lettered: {hop.dead_letter_reason}" + (f" ({text})" if text else "")
    return text


def _describe(event: Event) -> str:
    d = event.data
    if isinstance(d, MarketTick):
        return f"{d.tradingsymbol} bid {d.bid} ask {d.ask} ltp {d.last_price}"
    if isinstance(d, Signal):
        return f"{d.strategy} {d.side} {d.quantity} {d.tradingsymbol} ref {d.reference_price}"
    if isinstance(d, SignalValidated):
        return f"{d.signal.side} {d.signal.quantity} {d.signal.tradingsymbol} passed risk"
    if isinstance(d, SignalRejected):
        return "rejected: " + "; ".join(f"{f.rule}: {f.reason}" for f in d.failures)
    if isinstance(d, OrderSubmitted):
        return f"order {d.order_id} {d.side} {d.quantity} {d.tradingsymbol} {d.order_type}"
    if isinstance(d, OrderFilled):
        return f"{d.side} {d.quantity} {d.tradingsymbol} @ {d.price}, charges {d.charges}"
    if isinstance(d, OrderFailed | OrderCancelled):
        return d.reason
    if isinstance(d, OrderUpdated):
        return f"{d.status} {d.message}".strip()
    if isinstance(d, PnlSnapshot):
        return f"net {d.net_quantity} realised {d.realised_pnl} unrealised {d.unrealised_pnl}"
    if isinstance(d, Alert):
        return d.message
    return ""

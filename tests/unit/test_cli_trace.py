"""`alphapanda trace`: ordering and printing a trading idea's lifecycle (reading Kafka is integration)."""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from alphapanda import cli_trace
from alphapanda.cli_trace import Hop, lifecycle, render
from alphapanda.events import (
    IST,
    Event,
    MarketTick,
    OrderFilled,
    OrderSubmitted,
    OrderType,
    Product,
    RuleFailure,
    Side,
    Signal,
    SignalRejected,
    SignalValidated,
    Validity,
    source_of,
    tick_event,
)

D = Decimal
T0 = datetime(2026, 1, 5, 9, 15, 2, tzinfo=IST)
MS = timedelta(milliseconds=1)


def _idea() -> dict[str, Event]:
    tick = tick_event(
        MarketTick(
            instrument_token=738561,
            tradingsymbol="RELIANCE",
            exchange="NSE",
            last_price=D("1480.05"),
            bid=D("1479.95"),
            ask=D("1480.05"),
            exchange_timestamp=T0,
        ),
        "tick-1",
    )
    signal = Signal(
        instrument_token=738561,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy="ema_fast",
        side=Side.BUY,
        quantity=10,
        reference_price=D("1480.00"),
        tick_time=T0,
    )
    runner = source_of("strategy_runner")
    out = {"tick": tick}
    for broker, offset in (("paper", 0), ("zerodha", 3)):
        raw = tick.child(
            f"{broker}/signal",
            signal,
            source=runner,
            broker=broker,
            correlationid="idea-1",
            time=T0 + 12 * MS,
        )
        at = T0 + (20 + offset) * MS
        validated = raw.child("validated", SignalValidated(signal=signal), source=runner, time=at)
        fields: dict[str, Any] = {
            "instrument_token": 738561,
            "tradingsymbol": "RELIANCE",
            "exchange": "NSE",
            "strategy": "ema_fast",
        }
        submitted = validated.child(
            "submitted",
            OrderSubmitted(
                **fields,
                order_id=f"o-{broker}",
                signal_id=raw.id,
                side=Side.BUY,
                quantity=10,
                order_type=OrderType.MARKET,
                product=Product.MIS,
                validity=Validity.DAY,
                submitted_at=at + 5 * MS,
            ),
            source=runner,
            time=at + 5 * MS,
        )
        filled = validated.child(
            "filled",
            OrderFilled(
                **fields,
                order_id=f"o-{broker}",
                fill_id=f"f-{broker}",
                side=Side.BUY,
                quantity=10,
                price=D("1480.10"),
                product=Product.MIS,
                filled_at=at + 30 * MS,
            ),
            source=runner,
            time=at + 30 * MS,
        )
        out |= {f"{broker}.raw": raw, f"{broker}.validated": validated, f"{broker}.submitted": submitted}
        out[f"{broker}.filled"] = filled
    return out


def _hops(events: dict[str, Event]) -> list[Hop]:
    return [Hop(e, e.topic) for e in events.values()]


def test_lifecycle_when_brokers_interleave_then_events_are_in_time_order_causes_first() -> None:
    idea = _idea()
    hops = list(reversed(_hops(idea)))

    ordered = [h.event for h in lifecycle(hops)]

    assert ordered[0] is idea["tick"]
    # Equal times: the two fan-out copies come after the tick, in a stable order.
    assert {ordered[1].id, ordered[2].id} == {idea["paper.raw"].id, idea["zerodha.raw"].id}
    assert [e.time for e in ordered] == sorted(e.time for e in ordered)
    assert ordered.index(idea["paper.validated"]) < ordered.index(idea["zerodha.validated"])


def test_render_when_an_idea_is_printed_then_each_row_shows_its_hop_and_time_since_the_first() -> None:
    idea = _idea()

    text = render("idea-1", _hops(idea))

    lines = text.splitlines()
    assert lines[0] == "trading idea idea-1: 9 events on paper, zerodha"
    rows = {r[6]: r for r in (re.split(r"\s{2,}", line) for line in lines[2:-1])}
    assert rows["tick-1"][:6] == [
        "2026-01-05 09:15:02.000",
        "-",
        "0.0 ms",
        "-",
        "market.equity.ticks",
        "market.tick",
    ]
    assert rows["tick-1"][7] == "RELIANCE bid 1479.95 ask 1480.05 ltp 1480.05"
    zerodha_validated = rows[idea["zerodha.validated"].id]
    assert zerodha_validated[1:6] == [
        "+11.0 ms",
        "23.0 ms",
        "zerodha",
        "zerodha.signals.validated",
        "signal.validated",
    ]
    assert rows[idea["paper.filled"].id][1:3] == ["+30.0 ms", "50.0 ms"]
    assert rows[idea["paper.filled"].id][7] == "BUY 10 RELIANCE @ 1480.10, charges 0"
    assert lines[-1] == "tick to fill: paper 50.0 ms, zerodha 53.0 ms"


def test_render_when_an_event_was_dead_lettered_then_its_reason_is_shown() -> None:
    idea = _idea()
    raw = idea["paper.raw"]
    assert isinstance(raw.data, Signal)
    rejected = raw.child(
        "rejected",
        SignalRejected(signal=raw.data, failures=(RuleFailure(rule="max_order_value", reason="too big"),)),
        source="x",
        time=raw.time + MS,
    )
    hops = [
        Hop(idea["tick"], idea["tick"].topic),
        Hop(raw, raw.topic + ".dlq", dead_letter_reason="failed after 5 attempts: boom"),
        Hop(rejected, rejected.topic),
    ]

    lines = render("idea-1", hops).splitlines()

    assert lines[3].endswith(
        "dead-lettered: failed after 5 attempts: boom (ema_fast BUY 10 RELIANCE ref 1480.00)"
    )
    assert "paper.signals.raw.dlq" in lines[3]
    assert lines[4].endswith("rejected: max_order_value: too big")
    assert "tick to fill" not in lines[-1]


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(microseconds=1500), "1.5 ms"),
        (timedelta(seconds=2.25), "2.250 s"),
        (timedelta(minutes=3, seconds=4), "3m04s"),
        (timedelta(days=2, hours=1, seconds=5), "2d1h00m05s"),
        (-timedelta(milliseconds=3), "-3.0 ms"),
    ],
)
def test_duration_when_formatted_then_unit_fits_the_size(delta: timedelta, text: str) -> None:
    assert cli_trace._duration(delta) == text


def test_brokers_on_when_a_cluster_has_pipelines_then_each_signals_topic_names_a_broker() -> None:
    found = cli_trace._brokers_on(
        ["market.equity.ticks", "paper.signals.raw", "paper.signals.raw.dlq", "zerodha.signals.raw", "x.y"]
    )

    assert found == ["paper", "zerodha"]


def test_trace_command_when_registered_then_it_parses_its_arguments() -> None:
    parser = argparse.ArgumentParser(prog="alphapanda")
    cli_trace.register(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["trace", "idea-1", "--bootstrap-servers", "k:9092", "--brokers", "paper"])

    assert (args.command, args.correlation_id, args.bootstrap_servers, args.brokers) == (
        "trace",
        "idea-1",
        "k:9092",
        "paper",
    )


def test_trace_command_when_no_kafka_is_configured_then_it_says_how_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    args = argparse.Namespace(
        command="trace", correlation_id="x", bootstrap_servers=None, brokers=None, timeout=1.0
    )

    assert cli_trace.run(args) == 2
    assert "--bootstrap-servers or set ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS" in capsys.readouterr().err


def test_trace_command_when_a_broker_name_is_bad_then_it_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(
        command="trace", correlation_id="x", bootstrap_servers="k:1", brokers="Paper!", timeout=1.0
    )

    assert cli_trace.run(args) == 2
    assert "--brokers" in capsys.readouterr().err

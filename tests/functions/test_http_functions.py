"""Each stage behind a real functions-framework server: binary-mode CloudEvents over HTTP in, Kafka out."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from alphapanda import topics
from alphapanda.bus.kafka import ensure_topics, from_kafka
from alphapanda.events import IST, Event, EventType, MarketTick, Side, Signal, derive_id, to_attributes
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from function_server import FunctionServer, functions_framework_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(kafka: EmbeddedKafka, redis_server: EmbeddedRedis) -> dict[str, str]:
    ensure_topics(kafka.bootstrap_servers, topics.all_topics(["paper"]), 1)
    return {
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "ALPHAPANDA_REDIS__URL": redis_server.url,
        "ALPHAPANDA_BROKERS": "paper",
    }


@pytest.fixture
def risk_manager(env: dict[str, str]) -> Iterator[FunctionServer]:
    server = FunctionServer("risk_manager", env)
    yield server
    server.stop()


def _read(
    bootstrap: str, topic: str, expect: int, timeout_s: float = 15
) -> list[tuple[dict[str, bytes], bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[tuple[dict[str, bytes], bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expect and time.monotonic() < deadline:
        for m in consumer.consume(100, timeout=0.5):
            if not m.error():
                out.append((dict(m.headers() or []), m.value()))
    consumer.close()
    return out


def _signal_event() -> Event:
    signal = Signal(
        instrument_token=738561,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy="ema_fast",
        side=Side.BUY,
        quantity=10,
        reference_price=Decimal("1480.00"),
        tick_time=datetime(2026, 1, 5, 10, 0, tzinfo=IST),
    )
    return Event(
        id="sig-1",
        type=EventType.SIGNAL_RAW,
        source="/test",
        data=signal,
        partitionkey="738561",
        correlationid="idea-1",
        causationid="tick-1",
        broker="paper",
    )


def test_post_when_signal_is_valid_then_validated_event_is_on_kafka_before_the_2xx(
    risk_manager: FunctionServer, kafka: EmbeddedKafka
) -> None:
    event = _signal_event()
    response = risk_manager.post(to_attributes(event), event.data.model_dump_json().encode())
    assert response.status_code == 200
    # The reply was sent only after the broker acknowledged the output, so it is there now.
    records = _read(kafka.bootstrap_servers, topics.signals_validated("paper"), expect=1, timeout_s=5)
    assert len(records) == 1
    headers, value = records[0]
    out = from_kafka(b"738561", value, list(headers.items()))
    assert out.id == derive_id("sig-1", "validated")
    assert out.correlationid == "idea-1" and out.causationid == "sig-1"

    # A redelivery (same id) answers 2xx again and republishes the same event id, nothing new.
    again = risk_manager.post(to_attributes(event), event.data.model_dump_json().encode())
    assert again.status_code == 200
    records = _read(kafka.bootstrap_servers, topics.signals_validated("paper"), expect=2)
    assert {h["ce_id"] for h, _ in records} == {out.id.encode()}


def test_post_when_data_breaks_the_schema_then_2xx_and_the_event_is_dead_lettered(
    risk_manager: FunctionServer, kafka: EmbeddedKafka
) -> None:
    attrs = to_attributes(_signal_event())
    response = risk_manager.post(attrs, b'{"strategy": "ema_fast", "surprise": 1}')
    # Retrying bad input can never succeed: 2xx so Knative does not retry, and the event is kept.
    assert response.status_code == 200
    records = _read(kafka.bootstrap_servers, topics.dlq(topics.signals_raw("paper")), expect=1)
    assert len(records) == 1
    headers, value = records[0]
    assert b"invalid data" in headers["ce_deadletterreason"]
    assert headers["ce_deadlettertopic"] == b"paper.signals.raw"
    assert b"surprise" in value
    assert _read(kafka.bootstrap_servers, topics.signals_validated("paper"), expect=1, timeout_s=1) == []


def test_post_when_request_is_not_a_cloudevent_then_400_which_knative_does_not_retry(
    risk_manager: FunctionServer,
) -> None:
    response = requests.post(risk_manager.url, json={"hello": "world"}, timeout=10)
    assert response.status_code == 400


def test_post_when_event_is_for_another_broker_then_dead_lettered_not_processed(
    risk_manager: FunctionServer, kafka: EmbeddedKafka
) -> None:
    event = _signal_event()
    attrs = {**to_attributes(event), "broker": "zerodha"}
    assert risk_manager.post(attrs, event.data.model_dump_json().encode()).status_code == 200
    records = _read(kafka.bootstrap_servers, topics.dlq(topics.signals_raw("paper")), expect=1)
    assert b"zerodha" in records[0][0]["ce_deadletterreason"]


def test_post_when_a_tick_reaches_the_market_feed_then_it_is_on_the_market_topic(
    env: dict[str, str], kafka: EmbeddedKafka
) -> None:
    server = FunctionServer("market_feed", env)
    try:
        tick = MarketTick(
            instrument_token=408065,
            tradingsymbol="INFY",
            exchange="NSE",
            last_price=Decimal("1520.05"),
            bid=Decimal("1520.00"),
            ask=Decimal("1520.10"),
            exchange_timestamp=datetime(2026, 1, 5, 10, 0, tzinfo=IST),
        )
        event = Event(
            id="tick-9",
            type=EventType.MARKET_TICK,
            source="/test",
            data=tick,
            partitionkey="408065",
            correlationid="tick-9",
            causationid="tick-9",
        )
        assert server.post(to_attributes(event), tick.model_dump_json().encode()).status_code == 200
        records = _read(kafka.bootstrap_servers, topics.market_ticks("equity"), expect=1)
        assert records[0][0]["ce_id"] == b"tick-9"
    finally:
        server.stop()


def _start_and_fail(
    function: str, env: dict[str, str], signature: str = "cloudevent"
) -> subprocess.CompletedProcess[str]:
    """Run `functions-framework` for `function` as Knative does, expecting it to stop by itself."""
    return subprocess.run(
        functions_framework_command(function, free_port(), signature),
        env={k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# Nothing listens on these: the servers must stop before they connect to anything.
UNREACHABLE = {
    "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "ALPHAPANDA_REDIS__URL": "redis://127.0.0.1:1/0",
    "ALPHAPANDA_BROKERS": "paper",
}


def test_server_when_strategies_file_names_a_module_the_image_lacks_then_it_stops_at_start_with_one_line(
    tmp_path: Path,
) -> None:
    strategies = tmp_path / "strategies.yaml"
    strategies.write_text(
        "strategies:\n  - name: mine\n    kind: not_installed_here:Breakout\n"
        "    instruments: all\n    brokers: [paper]\n"
    )

    done = _start_and_fail("strategy_runner", UNREACHABLE | {"ALPHAPANDA_STRATEGIES_FILE": str(strategies)})

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"alphapanda strategy_runner function: cannot start: {strategies}: strategy 'mine': cannot "
        "import module 'not_installed_here' of kind 'not_installed_here:Breakout' (No module named "
        "'not_installed_here'): install it, or add its directory to PYTHONPATH"
    ]


@pytest.mark.parametrize("function", ["risk_manager", "market_feed"])
def test_server_when_kafka_or_redis_not_configured_then_it_stops_at_start_saying_which_settings(
    function: str,
) -> None:
    done = _start_and_fail(function, {"ALPHAPANDA_BROKERS": "paper"})

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"alphapanda {function} function: cannot start: a function needs "
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS and ALPHAPANDA_REDIS__URL"
    ]


def test_server_when_a_setting_is_wrong_then_it_stops_at_start_naming_the_setting() -> None:
    done = _start_and_fail("portfolio_manager", UNREACHABLE | {"ALPHAPANDA_BROKERS": "paper,Paper"})

    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("alphapanda portfolio_manager function: cannot start: setting ALPHAPANDA_BROKERS")


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            UNREACHABLE | {"ALPHAPANDA_KITE__API_SECRET": "s"},
            "ALPHAPANDA_BROKERS names no zerodha broker (e.g. ALPHAPANDA_BROKERS=zerodha)",
        ),
        (
            UNREACHABLE | {"ALPHAPANDA_BROKERS": "paper,zerodha"},
            "order_updates needs ALPHAPANDA_KITE__API_SECRET to check Kite's postback checksums",
        ),
        (
            {"ALPHAPANDA_BROKERS": "zerodha", "ALPHAPANDA_KITE__API_SECRET": "s"},
            "order_updates needs ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS and ALPHAPANDA_REDIS__URL",
        ),
    ],
)
def test_postback_server_when_settings_are_wrong_then_it_stops_at_start_with_one_line(
    env: dict[str, str], says: str
) -> None:
    done = _start_and_fail("order_updates", env, signature="http")

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"alphapanda order_updates function: cannot start: {says}"]


def test_read_api_server_when_redis_not_configured_then_it_stops_at_start_with_one_line() -> None:
    done = _start_and_fail("api", {"ALPHAPANDA_BROKERS": "paper"}, signature="http")

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "alphapanda api function: cannot start: the read API needs ALPHAPANDA_REDIS__URL"
    ]

"""Two-step reads on the batched path (`Work.more_reads`): the store reads and watches what an
item names by its first values, and the order matcher, read that way, gives the very outputs
and state that `stages.process` (everything read at once) gives.

Redis-backed cases run on a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
import redis
from test_order_matcher import ASKS, OTHER, SQUARE_OFF, T0, TOKEN, D, Desk, Product, _limit

from alphapanda import stages
from alphapanda.brokers.base import Quote
from alphapanda.bus.delivery import deliver_batch
from alphapanda.domain.matching import Market
from alphapanda.domain.portfolio import Book, Position
from alphapanda.events import Event, MarketTick
from alphapanda.runtime.embedded import EmbeddedRedis
from alphapanda.stages.order_matcher import market_json
from alphapanda.stages.risk_ledger import ledger_reads, reserve
from alphapanda.stages.strategy_runner import quote_json
from alphapanda.state import keys
from alphapanda.state.store import BatchStateStore, Decision, MemoryStateStore, RedisStateStore, Work


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


def _redis_store(url: str) -> RedisStateStore:
    client = redis.Redis.from_url(url)
    client.flushall()
    return RedisStateStore(client, claim_ttl_s=3600)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_url: str) -> BatchStateStore:
    return MemoryStateStore() if request.param == "memory" else _redis_store(redis_url)


def _gated(n: int, seen: list[dict[str, str | None]], gate: str = "gate") -> Work:
    """Item n reads `gate`; only if it is set does it also need `extra`, and it counts in `extra`."""

    def more(values: Mapping[str, str | None]) -> Sequence[str]:
        return ["extra"] if values.get(gate) else []

    def decide(values: dict[str, str | None]) -> Decision:
        seen.append(dict(values))
        if "extra" not in values:
            return Decision(outputs=[])
        return Decision(outputs=[], writes={"extra": str(int(values["extra"] or 0) + 1)})

    return Work(f"claim:{n}", [gate], decide, more)


def test_process_batch_when_the_first_values_call_for_more_then_only_those_items_read_it(
    store: BatchStateStore,
) -> None:
    seen: list[dict[str, str | None]] = []
    open_gate = Work("claim:seed", [], lambda _: Decision(outputs=[], writes={"gate": "open", "extra": "5"}))
    store.process_batch([open_gate])

    store.process_batch([_gated(1, seen), _gated(2, seen, gate="closed"), _gated(3, seen)])

    assert seen == [
        {"gate": "open", "extra": "5"},
        {"closed": None},
        {"gate": "open", "extra": "6"},  # the batch's own write, as the item before left it
    ]
    assert store.get("extra") == "7"


def test_process_batch_when_an_earlier_item_opens_the_gate_then_a_later_one_reads_more_mid_batch(
    store: BatchStateStore,
) -> None:
    seen: list[dict[str, str | None]] = []
    opener = Work("claim:open", ["gate"], lambda _: Decision(outputs=[], writes={"gate": "open"}))

    store.process_batch([_gated(1, seen), opener, _gated(2, seen)])

    assert seen == [{"gate": None}, {"gate": "open", "extra": None}]
    assert store.get("extra") == "1"


def test_redis_process_batch_when_a_key_read_in_the_second_step_changes_then_the_batch_is_redone(
    redis_url: str,
) -> None:
    store = _redis_store(redis_url)
    store.client.mset({"gate": "open", "extra": "5"})
    intruder = redis.Redis.from_url(redis_url)
    seen: list[dict[str, str | None]] = []
    first = _gated(1, seen)

    def decide(values: dict[str, str | None]) -> Decision:
        if len(seen) == 0:
            intruder.set("extra", "100")  # after the second read, before EXEC
        return first.decide(values)

    store.process_batch([Work(first.claim_key, first.read_keys, decide, first.more_reads)])

    assert [v["extra"] for v in seen] == ["5", "100"], "the first attempt should have been redone"
    assert store.get("extra") == "101"


# --- the order matcher, read in two steps --------------------------------------------------------


def _state(store: MemoryStateStore | RedisStateStore) -> dict[str, Any]:
    if isinstance(store, MemoryStateStore):
        return store.snapshot()
    client = store.client
    names = [k.decode() for k in client.keys("*") if b":claim:" not in k]
    return {k: store.get(k) for k in names}


def _scenario(desk: Desk, case: str) -> list[Event]:
    """Seed `desk` for `case` and return the ticks to deliver."""
    desk.quote("1479.95", "1480.00")
    at = T0
    if case == "fills":
        desk.signal(quantity=100, **_limit("1470.00"))
        desk.signal(quantity=30, strategy="s2", **_limit("1469.95"))
    elif case == "halted":
        desk.signal(quantity=100, **_limit("1470.00"))
        desk.seed({keys.control("paper"): "HALTED"})
    elif case == "square_off":
        mis = Book(cash=D(0), positions=((TOKEN, Position(10, D("1480"), product="MIS")),))
        desk.seed({keys.book("paper", "s1"): json.dumps(mis.to_json())})
        desk.seed(reserve({}, "paper", TOKEN, "s1", 10, D("1480")))
        desk.signal(quantity=10, product=Product.CNC, **_limit("1470.00"))
        at = SQUARE_OFF - timedelta(seconds=2)
    prices = [("1474.95", "1475.00"), ("1469.90", "1469.95"), ("1469.85", "1469.90"), ("1468.00", "1468.05")]
    ticks = []
    for n, (bid, ask) in enumerate(prices):
        ticks.append(desk.tick_event(at + timedelta(seconds=n), bid, ask, asks=[(ask, 60)]))
        ticks.append(desk.tick_event(at + timedelta(seconds=n), "1499.95", "1500.00", token=OTHER, asks=ASKS))
    return ticks


@pytest.mark.parametrize("case", ["fills", "halted", "square_off", "no_orders"])
def test_matcher_when_read_in_two_steps_in_a_batch_then_outputs_and_state_equal_one_at_a_time(
    redis_url: str, case: str
) -> None:
    reference = Desk()
    ticks = _scenario(reference, case)
    expected = [stages.process(reference.matcher, t, reference.store) for t in ticks]

    batched = Desk()
    batched.store = _redis_store(redis_url)  # type: ignore[assignment]
    assert _scenario(batched, case) == ticks
    result = deliver_batch(batched.matcher, ticks + ticks[:3], batched.store)

    assert result.failure is None
    got = [r for r in result.results if isinstance(r, list)]
    assert len(got) == len(ticks) + 3
    assert [[(e.id, e.data) for e in outs] for outs in got] == [
        [(e.id, e.data) for e in outs] for outs in expected + expected[:3]
    ], "redelivered ticks republish their outputs"
    assert _state(batched.store) == _state(reference.store)
    if case != "no_orders":
        assert any(expected), "the scenario should make the matcher act"


def test_matcher_when_no_order_rests_then_its_first_reads_leave_out_the_ledger_and_need_no_more() -> None:
    desk = Desk()
    tick = desk.tick_event(T0, "1479.95", "1480.00")

    first = desk.matcher.first_reads(tick)

    assert first == [keys.resting_orders("paper", TOKEN)]
    assert desk.matcher.more_reads(tick, {first[0]: None}) == []
    desk.quote("1479.95", "1480.00")
    desk.signal(quantity=100, **_limit("1470.00"))
    assert desk.store.get(first[0]), "the order should rest"
    more = desk.matcher.more_reads(tick, {first[0]: desk.store.get(first[0])})
    assert set(ledger_reads("paper", TOKEN, "s1")) <= set(more)
    assert set(more) | set(first) == set(desk.matcher.reads(tick))


@pytest.mark.parametrize(
    "bids, asks",
    [
        (None, None),
        ([("1479.95", 40), ("1479.90", 0), ("1480.00", 5), ("1479.95", 7)], None),
        (None, [("1480.10", 50), ("1480.00", 40), ("0", 9), ("1480.00", 3)]),
        ([("1479.95", 40)], [("1480.00", 40), ("1480.05", 30)]),
        ([], []),
    ],
)
def test_market_json_when_written_out_then_it_is_the_text_of_the_matchers_market(
    bids: list[tuple[str, int]] | None, asks: list[tuple[str, int]] | None
) -> None:
    desk = Desk()
    tick = desk.tick_event(T0, "1479.95", "1480.00", "1479.975", bids=bids, asks=asks).data
    assert isinstance(tick, MarketTick)

    assert market_json(tick) == json.dumps(Market.from_tick(tick).to_json())


def test_quote_json_when_written_out_then_it_is_the_text_of_the_runners_quote() -> None:
    desk = Desk()
    for at, bid, ask, last in [(T0, "1479.95", "1480.00", "1480"), (SQUARE_OFF, "0.05", "0.10", "0.05")]:
        tick = desk.tick_event(at, bid, ask, last).data
        assert isinstance(tick, MarketTick)
        quote = Quote(tick.bid, tick.ask, tick.last_price, tick.exchange_timestamp)

        assert quote_json(tick) == json.dumps(quote.to_json())

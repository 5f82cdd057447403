"""Replay scoping: a tick stamped for a replay broker feeds that broker only, with its own market
state, and live ticks never reach a replay broker (so `alphapanda replay` cannot touch live state)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from alphapanda import stages
from alphapanda.brokers.factory import TraderFactory
from alphapanda.config import Settings
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.strategy import EmaCrossover
from alphapanda.events import IST, Event, InvalidEvent, MarketTick, SignalValidated, tick_event
from alphapanda.runtime.replay import ReplayError, check_replay_broker, replay_id, replay_tick
from alphapanda.stages.order_matcher import OrderMatcher
from alphapanda.stages.risk_manager import RiskManager
from alphapanda.stages.strategy_runner import StrategyRunner
from alphapanda.stages.trading_engine import TradingEngine
from alphapanda.state import keys
from alphapanda.state.store import MemoryStateStore
from alphapanda.strategies import StrategySpec
from alphapanda.topics import is_replay_broker, market_scope

D = Decimal
TOKEN = 738561
T0 = datetime(2026, 1, 5, 9, 15, tzinfo=IST)
RELIANCE = Instrument(TOKEN, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", D("0.05"), 1, D("1480"))
BROKERS = ("paper", "paper-replay")
# fast=1, slow=2: the first tick seeds the EMAs, the second one above it crosses and buys 10.
SPEC = StrategySpec("ema", EmaCrossover(fast=1, slow=2, quantity=10), frozenset({TOKEN}), BROKERS)


def _tick(n: int, price: str) -> Event:
    p = D(price)
    return tick_event(
        MarketTick(
            instrument_token=TOKEN,
            tradingsymbol="RELIANCE",
            exchange="NSE",
            last_price=p,
            bid=p - D("0.05"),
            ask=p,
            exchange_timestamp=T0 + timedelta(seconds=n),
        ),
        event_id=f"tick-{n}",
    )


def _run(runner: StrategyRunner, store: MemoryStateStore, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        out.extend(stages.process(runner, e, store))
    return out


def test_market_scope_when_broker_is_named_replay_then_it_is_its_own_scope() -> None:
    assert market_scope("paper") is None
    assert market_scope("zerodha") is None
    assert market_scope("paper-replay") == "paper-replay"
    assert is_replay_broker("paper-2-replay") and not is_replay_broker("paper-replayed")


def test_strategy_runner_when_ticks_are_live_then_only_live_brokers_trade_on_unscoped_state() -> None:
    runner = StrategyRunner([SPEC], frozenset(BROKERS))
    store = MemoryStateStore()

    signals = _run(runner, store, [_tick(0, "1480"), _tick(1, "1490")])

    assert [s.broker for s in signals] == ["paper"]
    assert set(store.snapshot()) == {keys.quote(TOKEN), keys.symbol(TOKEN), keys.indicator("ema", TOKEN)}


def test_strategy_runner_when_ticks_are_replayed_then_only_the_replay_broker_trades_on_own_state() -> None:
    runner = StrategyRunner([SPEC], frozenset(BROKERS))
    store = MemoryStateStore()
    live = [_tick(0, "1480"), _tick(1, "1490")]
    _run(runner, store, live)
    before = store.snapshot()

    replayed = [replay_tick(e, "paper-replay") for e in live]
    signals = _run(runner, store, replayed)

    assert [s.broker for s in signals] == ["paper-replay"]
    # The same ticks give the same idea on the replay broker as they gave live...
    assert signals[0].data.model_dump(exclude={"reason"}) == _run(
        StrategyRunner([SPEC], frozenset(BROKERS)), MemoryStateStore(), live
    )[0].data.model_dump(exclude={"reason"})
    # ...under a new correlation namespace rooted at the replayed tick...
    assert signals[0].causationid == replay_id("tick-1", "paper-replay")
    assert signals[0].correlationid not in {e.correlationid for e in live}
    # ...and live state is exactly as it was: the replay wrote only under its own scope.
    after = store.snapshot()
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith("paper-replay:") for k in set(after) - set(before))
    assert set(after) - set(before) == {
        keys.quote(TOKEN, "paper-replay"),
        keys.symbol(TOKEN, "paper-replay"),
        keys.indicator("ema", TOKEN, "paper-replay"),
    }


@pytest.mark.parametrize("broker", ["paper", "zerodha"])
def test_strategy_runner_when_a_tick_names_a_live_broker_then_it_is_invalid(broker: str) -> None:
    runner = StrategyRunner([SPEC], frozenset(BROKERS))
    with pytest.raises(InvalidEvent, match="only a replay broker"):
        stages.process(runner, replace(_tick(0, "1480"), broker=broker), MemoryStateStore())


def _matcher() -> OrderMatcher:
    traders = TraderFactory(Settings(brokers=BROKERS), {TOKEN: RELIANCE})
    return OrderMatcher(frozenset(BROKERS), traders=traders, strategies=[SPEC])


def test_order_matcher_when_tick_is_live_then_it_serves_only_live_paper_brokers() -> None:
    store = MemoryStateStore()

    stages.process(_matcher(), _tick(0, "1480"), store)

    assert set(store.snapshot()) == {keys.paper_market("paper", TOKEN)}


def test_order_matcher_when_tick_is_replayed_then_it_serves_only_that_replay_broker() -> None:
    store = MemoryStateStore()

    stages.process(_matcher(), replay_tick(_tick(0, "1480"), "paper-replay"), store)

    assert set(store.snapshot()) == {keys.paper_market("paper-replay", TOKEN)}


def test_order_matcher_when_a_tick_names_a_live_broker_then_it_is_invalid() -> None:
    with pytest.raises(InvalidEvent, match="only a replay broker"):
        stages.process(_matcher(), replace(_tick(0, "1480"), broker="paper"), MemoryStateStore())


def test_risk_and_engine_when_broker_is_a_replay_then_they_read_the_replay_quote() -> None:
    runner = StrategyRunner([SPEC], frozenset(BROKERS))
    store = MemoryStateStore()
    replayed = [replay_tick(_tick(n, p), "paper-replay") for n, p in enumerate(["1", "2"])]
    (signal,) = _run(runner, store, replayed)
    validated = signal.child(
        "validated", SignalValidated(signal=signal.data), source="test", broker="paper-replay"
    )
    traders = TraderFactory(Settings(brokers=BROKERS), {TOKEN: RELIANCE})

    risk_reads = RiskManager(frozenset(BROKERS)).reads(signal)
    engine_reads = TradingEngine(frozenset(BROKERS), traders=traders).reads(validated)

    assert keys.quote(TOKEN, "paper-replay") in risk_reads and keys.quote(TOKEN) not in risk_reads
    assert keys.quote(TOKEN, "paper-replay") in engine_reads and keys.quote(TOKEN) not in engine_reads


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ("paper", "named \\*-replay"),
        ("zerodha-replay", "paper broker only"),
        ("Paper-Replay", "invalid"),
    ],
)
def test_check_replay_broker_when_broker_could_touch_live_state_then_it_is_refused(
    broker: str, message: str
) -> None:
    with pytest.raises((ReplayError, ValueError), match=message):
        check_replay_broker(broker)


def test_check_replay_broker_when_broker_is_a_paper_replay_then_it_passes() -> None:
    check_replay_broker("paper-replay")
    check_replay_broker("paper-2-replay")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--broker", "paper"], "a replay goes to a replay broker, named *-replay"),
        (["--broker", "zerodha-replay"], "a replay trades a paper broker only"),
        (["--from", "yesterday"], "--from: 'yesterday' is not an ISO 8601 time"),
    ],
)
def test_replay_cli_when_broker_is_not_a_paper_replay_then_one_line_says_why(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from alphapanda.cli import main

    assert main(["replay", "--from", "0", *argv] if "--from" not in argv else ["replay", *argv]) == 2

    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err

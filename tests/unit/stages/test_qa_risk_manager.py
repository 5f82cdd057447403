"""A risk officer's tests of the risk stage and its ledger: many strategies on one instrument,
flatten under the kill switch, prices that cannot be valued, and exposure given back when an
order is rejected, cancelled or partly filled."""

from __future__ import annotations

import functools
import json
from decimal import Decimal

from alphapanda import stages
from alphapanda.config import RiskLimits
from alphapanda.domain.risk import BrokerState
from alphapanda.events import Event, EventType, Side, Signal, SignalRejected
from alphapanda.stages.risk_ledger import LedgerView, release, reserve
from alphapanda.stages.risk_manager import RiskInputs, RiskManager
from alphapanda.state import keys
from alphapanda.state.store import Decision, MemoryStateStore
from alphapanda.strategies import StrategyRisk
from alphapanda.topics import market_scope
from risk_signals import TOKEN, raw_event, risk_signal

D = Decimal
BROKER = "paper"


_signal = functools.partial(risk_signal, strategy="ema_a")


_raw = raw_event


def _risk(limits: RiskLimits | None = None, **kwargs: object) -> RiskManager:
    the_limits = limits or RiskLimits()
    return RiskManager(brokers=frozenset({BROKER}), limits_for=lambda _b: the_limits, **kwargs)  # type: ignore[arg-type]


def _book(**strategies: int) -> dict[str, str | None]:
    """Ledger values for strategies holding these quantities of TOKEN at Rs 1,000, nothing in flight."""
    net = sum(strategies.values())
    values: dict[str, str | None] = {
        keys.risk_position(BROKER, TOKEN): str(net),
        keys.risk_notional(BROKER, TOKEN): str(abs(net) * 1000),
        keys.risk_gross(BROKER): str(abs(net) * 1000),
        keys.risk_open_orders(BROKER): "0",
    }
    for name, qty in strategies.items():
        values[keys.risk_strategy_notional(BROKER, name)] = json.dumps(
            {str(TOKEN): [str(qty), str(abs(qty) * 1000)]}
        )
    return values


def _judge(risk: RiskManager, signal: Signal, values: dict[str, str | None], state: BrokerState) -> Event:
    inputs = RiskInputs(
        ledger=LedgerView.read(values, BROKER, TOKEN, signal.strategy),
        last_price=D("1000"),
        state=state,
        trades_today=0,
        last_signal=None,
        day_pnl=D(0),
    )
    (out,) = risk.judge(_raw(signal), inputs).outputs
    return out


def _reasons(event: Event) -> dict[str, str]:
    if event.type is EventType.SIGNAL_VALIDATED:
        return {}
    assert isinstance(event.data, SignalRejected)
    return {f.rule: f.reason for f in event.data.failures}


# --- many strategies on one instrument --------------------------------------------------------


def test_judge_when_a_flat_strategy_sells_against_anothers_long_then_its_capital_allocation_applies() -> None:
    # capital_allocation: ema_b (allocation Rs 1 lakh, flat) sells 500 while ema_a holds 1,000
    # long. The broker's net shrinks, but ema_b would hold a Rs 5 lakh short: it must be refused.
    risk = _risk(strategy_risk={"ema_b": StrategyRisk(capital_allocation=D("100000"))})
    values = _book(ema_a=1000)

    out = _judge(risk, _signal(Side.SELL, 500, strategy="ema_b"), values, BrokerState.ACTIVE)

    assert _reasons(out) == {
        "capital_allocation": "strategy ema_b would hold Rs 500000.00, beyond its allocation of Rs 100000.00"
    }


def test_judge_when_halted_and_strategies_hold_opposite_positions_then_each_flatten_is_validated() -> None:
    # kill switch: ema_a long 800 and ema_b short 300 (the broker net long 500). The operator's
    # flatten sends SELL 800 for ema_a and BUY 300 for ema_b; judged on the broker's net, each
    # one "crosses" or "adds", both were refused and the HALTED broker could close nothing.
    values = _book(ema_a=800, ema_b=-300)

    out_a = _judge(
        _risk(), _signal(Side.SELL, 800, strategy="ema_a", flatten=True), values, BrokerState.HALTED
    )
    out_b = _judge(
        _risk(), _signal(Side.BUY, 300, strategy="ema_b", flatten=True), values, BrokerState.HALTED
    )

    assert (_reasons(out_a), _reasons(out_b)) == ({}, {})


def test_judge_when_reducing_and_strategies_net_flat_then_each_may_close_its_own_position() -> None:
    values = _book(ema_a=100, ema_b=-100)

    out = _judge(_risk(), _signal(Side.SELL, 100, strategy="ema_a"), values, BrokerState.REDUCING)

    assert out.type is EventType.SIGNAL_VALIDATED


def test_judge_when_one_strategy_alone_reduces_then_unchanged_it_passes_reducing() -> None:
    out = _judge(_risk(), _signal(Side.SELL, 40), _book(ema_a=100), BrokerState.REDUCING)

    assert out.type is EventType.SIGNAL_VALIDATED


# --- flatten larger than the order-value limit ------------------------------------------------


def test_decide_when_halted_and_the_flatten_is_worth_more_than_max_order_value_then_validated() -> None:
    # 800 x 1,000 = 8 lakh, within the 10 lakh position-value limit but over the 5 lakh order limit.
    store = MemoryStateStore()
    seeded = {k: v for k, v in _book(ema_a=800).items() if v is not None} | {keys.control(BROKER): "HALTED"}
    store.process_once("seed", [], lambda _: Decision(outputs=[], writes=seeded))

    (out,) = stages.process(_risk(), _raw(_signal(Side.SELL, 800, flatten=True)), store)

    assert out.type is EventType.SIGNAL_VALIDATED
    assert store.get(keys.risk_position(BROKER, TOKEN)) == "0"


# --- prices the rules cannot value ------------------------------------------------------------


def test_decide_when_limit_price_is_negative_then_rejected_and_no_negative_exposure_is_reserved() -> None:
    store = MemoryStateStore()
    before = store.snapshot()

    (out,) = stages.process(_risk(), _raw(_signal(Side.BUY, 10, limit_price="-1000")), store)

    assert _reasons(out)["max_order_value"] == "limit price -1000 is not positive: the order cannot be valued"
    assert store.snapshot() == before


def test_decide_when_a_sell_limit_is_far_below_the_last_tick_then_rejected_by_the_price_band() -> None:
    store = MemoryStateStore()
    quote = json.dumps({"bid": "999.95", "ask": "1000.05", "ltp": "1000"})
    store.process_once(
        "seed", [], lambda _: Decision(outputs=[], writes={keys.quote(TOKEN, market_scope(BROKER)): quote})
    )

    (out,) = stages.process(_risk(), _raw(_signal(Side.SELL, 2000, limit_price="1")), store)

    assert out.type is EventType.SIGNAL_REJECTED
    assert _reasons(out)["price_band"] == "limit price 1 is 99.90% from the last tick 1000 (band 5%)"


# --- exposure given back (found correct) ------------------------------------------------------


def _after(values: dict[str, str | None], writes: dict[str, str]) -> dict[str, str | None]:
    return {**values, **writes}


def test_release_when_a_flip_is_cancelled_unfilled_then_the_long_is_restored_exactly() -> None:
    values = _book(ema_a=100)
    flipped = _after(values, reserve(values, BROKER, TOKEN, "ema_a", -200, D("1000")))
    view = LedgerView.read(flipped, BROKER, TOKEN, "ema_a")
    assert (view.position, view.notional, view.gross, view.open_orders) == (-100, D(100000), D(100000), 1)

    back = _after(flipped, release(flipped, BROKER, TOKEN, "ema_a", -200, D("1000"), order_done=True))

    view = LedgerView.read(back, BROKER, TOKEN, "ema_a")
    assert (view.position, view.notional, view.gross, view.open_orders) == (100, D(100000), D(100000), 0)
    assert view.strategy_quantity(TOKEN) == 100


def test_release_when_a_flip_fills_partly_then_only_the_unfilled_remainder_is_given_back() -> None:
    values = _book(ema_a=100)
    flipped = _after(values, reserve(values, BROKER, TOKEN, "ema_a", -200, D("1000")))
    # 150 of the 200 sold, 50 cancelled: the position is -50.
    done = _after(flipped, release(flipped, BROKER, TOKEN, "ema_a", -50, D("1000"), order_done=True))

    view = LedgerView.read(done, BROKER, TOKEN, "ema_a")
    assert (view.position, view.notional, view.gross, view.open_orders) == (-50, D(50000), D(50000), 0)
    assert view.strategy_positions == {str(TOKEN): ["-50", "50000"]}


def test_release_when_one_strategy_cancels_then_the_others_reservation_is_untouched() -> None:
    values = _book(ema_a=100)
    both = _after(values, reserve(values, BROKER, TOKEN, "ema_b", 50, D("1000")))

    back = _after(both, release(both, BROKER, TOKEN, "ema_b", 50, D("1000"), order_done=True))

    assert LedgerView.read(back, BROKER, TOKEN, "ema_a").strategy_positions == {str(TOKEN): ["100", "100000"]}
    assert LedgerView.read(back, BROKER, TOKEN, "ema_b").strategy_positions == {}
    assert LedgerView.read(back, BROKER, TOKEN, "ema_a").position == 100


def test_ledger_when_reserved_at_paise_then_every_amount_is_an_exact_decimal_string() -> None:
    writes = reserve({}, BROKER, TOKEN, "ema_a", 3, D("1480.05"))

    assert writes[keys.risk_notional(BROKER, TOKEN)] == "4440.15"
    assert writes[keys.risk_gross(BROKER)] == "4440.15"
    assert D(writes[keys.risk_gross(BROKER)]) == D("1480.05") * 3

"""The risk manager stage on an in-memory store: the ledger, trade counts, duplicates, the daily
loss limit turning the broker to REDUCING, and per-strategy limits."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alphapanda import stages
from alphapanda.config import RiskLimits
from alphapanda.domain.calendar import load_trading_calendar
from alphapanda.domain.risk import InstrumentLimits
from alphapanda.events import (
    IST,
    Alert,
    Event,
    EventType,
    Severity,
    Side,
    Signal,
    SignalRejected,
    derive_id,
)
from alphapanda.stages.risk_manager import RiskManager, day_pnl_total
from alphapanda.state import keys
from alphapanda.state.store import Decision, MemoryStateStore
from alphapanda.strategies import StrategyRisk
from risk_signals import MID_SESSION as T0
from risk_signals import TOKEN, raw_event, risk_signal

D = Decimal
OTHER = 408065
PAPER = frozenset({"paper"})
DAY = "2025-11-24"


@pytest.fixture
def store() -> MemoryStateStore:
    return MemoryStateStore()


def _seed(store: MemoryStateStore, writes: dict[str, str]) -> None:
    store.process_once(
        "test:claim:seed:" + ",".join(writes), [], lambda _: Decision(outputs=[], writes=writes)
    )


_signal = functools.partial(risk_signal, strategy="ema_test", price="1480")


def _raw(signal: Signal | None = None, event_id: str = "raw-1") -> Event:
    return raw_event(signal or _signal(), event_id)


def _risk(limits: RiskLimits | None = None, **kwargs: object) -> RiskManager:
    the_limits = limits or RiskLimits()
    return RiskManager(brokers=PAPER, limits_for=lambda _broker: the_limits, **kwargs)  # type: ignore[arg-type]


def _reasons(event: Event) -> dict[str, str]:
    assert isinstance(event.data, SignalRejected)
    return {f.rule: f.reason for f in event.data.failures}


def _day_pnl(realised: str, **unrealised: str) -> str:
    return json.dumps({"realised": realised, "unrealised": unrealised})


# --- validated signals ------------------------------------------------------------------------


def test_decide_when_signal_validated_then_reserves_counts_a_trade_and_remembers_the_signal(
    store: MemoryStateStore,
) -> None:
    (out,) = stages.process(_risk(), _raw(), store)

    assert out.type is EventType.SIGNAL_VALIDATED
    # 10 x 1,480 = 14,800
    assert store.snapshot() == {
        keys.risk_position("paper", TOKEN): "10",
        keys.risk_notional("paper", TOKEN): "14800",
        keys.risk_gross("paper"): "14800",
        keys.risk_strategy_notional("paper", "ema_test"): json.dumps({str(TOKEN): ["10", "14800"]}),
        keys.risk_open_orders("paper"): "1",
        keys.risk_trades("paper", "ema_test", DAY): "1",
        keys.risk_last_signal("paper", "ema_test", TOKEN): json.dumps(
            {"side": "BUY", "quantity": 10, "at": "2025-11-24T10:00:00+05:30"}
        ),
    }


def test_decide_when_second_signal_validated_then_trade_count_and_open_orders_reach_two(
    store: MemoryStateStore,
) -> None:
    stages.process(_risk(), _raw(_signal(Side.BUY, 10)), store)

    (out,) = stages.process(_risk(), _raw(_signal(Side.SELL, 4), event_id="raw-2"), store)

    assert out.type is EventType.SIGNAL_VALIDATED
    assert store.get(keys.risk_trades("paper", "ema_test", DAY)) == "2"
    assert store.get(keys.risk_open_orders("paper")) == "2"
    assert store.get(keys.risk_position("paper", TOKEN)) == "6"
    assert json.loads(store.get(keys.risk_last_signal("paper", "ema_test", TOKEN)) or "")["side"] == "SELL"


def test_decide_when_tick_time_is_utc_then_trades_are_counted_on_the_ist_day(store: MemoryStateStore) -> None:
    # 19:00 UTC on the 24th is 00:30 IST on the 25th (no calendar: session not enforced here)
    stages.process(_risk(), _raw(_signal(at=datetime(2025, 11, 24, 19, 0, tzinfo=UTC))), store)

    assert store.get(keys.risk_trades("paper", "ema_test", "2025-11-25")) == "1"
    assert store.get(keys.risk_trades("paper", "ema_test", DAY)) is None


def test_decide_when_limit_price_given_then_reservation_is_valued_at_it(store: MemoryStateStore) -> None:
    signal = _signal().model_copy(update={"limit_price": D("1475.50")})

    stages.process(_risk(), _raw(signal), store)

    assert store.get(keys.risk_notional("paper", TOKEN)) == "14755.00"


# --- rejected signals -------------------------------------------------------------------------


def test_decide_when_signal_rejected_then_nothing_is_written(store: MemoryStateStore) -> None:
    _seed(store, {keys.risk_position("paper", TOKEN): "5", keys.risk_trades("paper", "ema_test", DAY): "3"})
    before = store.snapshot()

    (out,) = stages.process(_risk(RiskLimits(max_order_value=D("1000"))), _raw(), store)

    assert out.type is EventType.SIGNAL_REJECTED
    assert out.topic == "paper.signals.rejected"
    assert store.snapshot() == before


def test_decide_when_many_rules_fail_then_every_failure_is_listed_with_its_numbers(
    store: MemoryStateStore,
) -> None:
    limits = RiskLimits(max_trades_per_day=3, max_open_orders=2, max_gross_exposure=D("20000"))
    _seed(
        store,
        {
            keys.control("paper"): "HALTED",
            keys.risk_trades("paper", "ema_test", DAY): "3",
            keys.risk_open_orders("paper"): "2",
            keys.risk_notional("paper", OTHER): "10000",
            keys.risk_gross("paper"): "10000",
            keys.quote(TOKEN): json.dumps({"bid": "1599.95", "ask": "1600.05", "ltp": "1600"}),
        },
    )

    (out,) = stages.process(_risk(limits), _raw(), store)

    # gross 10,000 + 10 x 1,480 = 24,800; 1,480 is 7.50% below the last tick 1,600
    assert _reasons(out) == {
        "kill_switch": "the broker is HALTED: only closing signals that reduce a position pass",
        "max_gross_exposure": "gross exposure would be Rs 24800.00, beyond the broker's Rs 20000.00",
        "max_trades_per_day": "strategy ema_test already sent 3 orders today (cap 3)",
        "max_open_orders": "2 orders are already open (limit 2)",
        "price_band": "signal price 1480 is 7.50% from the last tick 1600 (band 5%)",
    }


def test_decide_when_quote_is_known_then_price_band_judges_it_and_order_value_does_not(
    store: MemoryStateStore,
) -> None:
    # 10 x 1,480 = 14,800 is within 15,000; the last tick (1,600) only moves the price band.
    _seed(store, {keys.quote(TOKEN): json.dumps({"bid": "1599.95", "ask": "1600.05", "ltp": "1600"})})

    (out,) = stages.process(_risk(RiskLimits(max_order_value=D("15000"))), _raw(), store)

    assert list(_reasons(out)) == ["price_band"]


def test_decide_when_instrument_limits_known_then_lot_size_applies(store: MemoryStateStore) -> None:
    risk = _risk(instruments={TOKEN: InstrumentLimits(lot_size=250, derivative=True)})

    (out,) = stages.process(risk, _raw(), store)

    assert _reasons(out) == {"lot_size": "quantity 10 is not a multiple of the lot size 250"}


def test_decide_when_calendar_given_and_tick_time_on_a_holiday_then_trading_session_rejects(
    store: MemoryStateStore,
) -> None:
    at = datetime(2025, 12, 25, 10, 0, tzinfo=IST)

    (out,) = stages.process(_risk(calendar=load_trading_calendar()), _raw(_signal(at=at)), store)

    assert list(_reasons(out)) == ["trading_session"]


# --- duplicates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "validated"),
    [
        (_signal(at=T0 + timedelta(seconds=1)), False),
        (_signal(at=T0 + timedelta(seconds=2)), True),
        (_signal(Side.SELL, at=T0 + timedelta(seconds=1)), True),
        (_signal(quantity=11, at=T0 + timedelta(seconds=1)), True),
        (_signal(strategy="other", at=T0 + timedelta(seconds=1)), True),
    ],
    ids=["same_within_window", "same_at_window_end", "other_side", "other_quantity", "other_strategy"],
)
def test_decide_when_signal_follows_a_validated_one_then_only_the_same_within_the_window_is_a_duplicate(
    store: MemoryStateStore, second: Signal, validated: bool
) -> None:
    stages.process(_risk(), _raw(_signal()), store)

    (out,) = stages.process(_risk(), _raw(second, event_id="raw-2"), store)

    if validated:
        assert out.type is EventType.SIGNAL_VALIDATED
    else:
        assert _reasons(out) == {
            "duplicate_signal": "the same BUY 10 was sent 1.000s ago (suppression window 2.0s)"
        }


def test_decide_when_a_rejected_signal_is_repeated_then_it_is_not_a_duplicate_of_itself(
    store: MemoryStateStore,
) -> None:
    risk = _risk(RiskLimits(max_order_value=D("10000")))
    stages.process(risk, _raw(_signal()), store)

    (out,) = stages.process(risk, _raw(_signal(at=T0 + timedelta(seconds=1)), event_id="raw-2"), store)

    assert list(_reasons(out)) == ["max_order_value"]


# --- daily loss limit and the kill switch -----------------------------------------------------


def test_day_pnl_total_when_record_given_then_realised_plus_every_unrealised() -> None:
    assert day_pnl_total(_day_pnl("-120.50", **{"a:1": "-30", "b:2": "10.25"})) == D("-140.25")


@pytest.mark.parametrize("raw", [None, ""])
def test_day_pnl_total_when_no_record_then_zero(raw: str | None) -> None:
    assert day_pnl_total(raw) == D(0)


def test_decide_when_day_loss_reaches_the_limit_on_an_active_broker_then_reducing_and_alert(
    store: MemoryStateStore,
) -> None:
    # -30,000 realised - 20,000 unrealised = -50,000 = -limit
    _seed(store, {keys.day_pnl("paper", DAY): _day_pnl("-30000", **{"ema_test:738561": "-20000"})})
    raw = _raw()
    before = store.snapshot()

    alert, rejected = stages.process(_risk(RiskLimits(daily_loss_limit=D("50000"))), raw, store)

    assert store.get(keys.control("paper")) == "REDUCING"
    assert store.snapshot() == {**before, keys.control("paper"): "REDUCING"}
    assert alert.type is EventType.ALERT
    assert alert.type.value == "com.alphapanda.alert"
    assert (alert.id, alert.topic, alert.causationid, alert.correlationid) == (
        derive_id(raw.id, "alert"),
        "paper.alerts",
        raw.id,
        "idea-1",
    )
    assert alert.data == Alert(
        kind="daily_loss_limit",
        severity=Severity.CRITICAL,
        message="paper: today's PnL Rs -50000.00 breached the daily loss limit of Rs 50000.00; "
        "the broker is now REDUCING",
        details={"broker": "paper", "day_pnl": "-50000.00"},
        raised_at=T0,
    )
    assert _reasons(rejected) == {
        "daily_loss_limit": "today's PnL Rs -50000.00 breaches the daily loss limit of Rs 50000.00"
    }


def test_decide_when_day_loss_breached_and_signal_reduces_then_alert_and_it_is_validated(
    store: MemoryStateStore,
) -> None:
    _seed(
        store,
        {
            keys.day_pnl("paper", DAY): _day_pnl("-60000"),
            keys.risk_position("paper", TOKEN): "20",
        },
    )

    alert, validated = stages.process(_risk(), _raw(_signal(Side.SELL, 10)), store)

    assert (alert.type, validated.type) == (EventType.ALERT, EventType.SIGNAL_VALIDATED)
    assert store.get(keys.control("paper")) == "REDUCING"
    assert store.get(keys.risk_position("paper", TOKEN)) == "10"


def test_decide_when_day_loss_just_inside_the_limit_then_no_alert_and_broker_stays_active(
    store: MemoryStateStore,
) -> None:
    _seed(store, {keys.day_pnl("paper", DAY): _day_pnl("-49999.99")})

    (out,) = stages.process(_risk(), _raw(), store)

    assert out.type is EventType.SIGNAL_VALIDATED
    assert store.get(keys.control("paper")) is None


@pytest.mark.parametrize("state", ["REDUCING", "HALTED"])
def test_decide_when_day_loss_breached_and_broker_not_active_then_no_new_alert_or_state_change(
    store: MemoryStateStore, state: str
) -> None:
    _seed(store, {keys.day_pnl("paper", DAY): _day_pnl("-60000"), keys.control("paper"): state})

    (out,) = stages.process(_risk(), _raw(), store)

    assert out.type is EventType.SIGNAL_REJECTED
    assert {"kill_switch", "daily_loss_limit"} <= set(_reasons(out))
    assert store.get(keys.control("paper")) == state


def test_decide_when_day_loss_is_recorded_for_another_day_then_it_does_not_count(
    store: MemoryStateStore,
) -> None:
    _seed(store, {keys.day_pnl("paper", "2025-11-21"): _day_pnl("-60000")})

    (out,) = stages.process(_risk(), _raw(), store)

    assert out.type is EventType.SIGNAL_VALIDATED


# --- per-strategy risk ------------------------------------------------------------------------


def test_decide_when_strategy_limit_is_tighter_than_the_brokers_then_it_applies_to_that_strategy_only(
    store: MemoryStateStore,
) -> None:
    risk = _risk(strategy_risk={"ema_test": StrategyRisk(max_order_value=D("10000"))})

    (tight,) = stages.process(risk, _raw(_signal()), store)
    (other,) = stages.process(risk, _raw(_signal(strategy="other"), event_id="raw-2"), store)

    assert _reasons(tight) == {"max_order_value": "order value Rs 14800.00 exceeds the limit of Rs 10000.00"}
    assert other.type is EventType.SIGNAL_VALIDATED


def test_decide_when_strategy_limit_is_looser_than_the_brokers_then_the_brokers_still_applies(
    store: MemoryStateStore,
) -> None:
    risk = _risk(
        RiskLimits(max_order_value=D("10000"), max_trades_per_day=1),
        strategy_risk={"ema_test": StrategyRisk(max_order_value=D("900000"), max_trades_per_day=50)},
    )
    _seed(store, {keys.risk_trades("paper", "ema_test", DAY): "1"})

    (out,) = stages.process(risk, _raw(), store)

    assert _reasons(out) == {
        "max_order_value": "order value Rs 14800.00 exceeds the limit of Rs 10000.00",
        "max_trades_per_day": "strategy ema_test already sent 1 orders today (cap 1)",
    }


def test_decide_when_strategy_would_exceed_its_capital_allocation_then_rejected(
    store: MemoryStateStore,
) -> None:
    risk = _risk(strategy_risk={"ema_test": StrategyRisk(capital_allocation=D("20000"))})
    _seed(store, {keys.risk_strategy_notional("paper", "ema_test"): json.dumps({str(OTHER): ["5", "10000"]})})

    (out,) = stages.process(risk, _raw(), store)

    # 10,000 already held + 10 x 1,480
    assert _reasons(out) == {
        "capital_allocation": "strategy ema_test would hold Rs 24800.00, beyond its allocation of Rs 20000.00"
    }


def test_decide_when_strategy_allocation_fits_then_validated_and_exposure_recorded(
    store: MemoryStateStore,
) -> None:
    risk = _risk(strategy_risk={"ema_test": StrategyRisk(capital_allocation=D("24800"))})
    _seed(store, {keys.risk_strategy_notional("paper", "ema_test"): json.dumps({str(OTHER): ["5", "10000"]})})

    (out,) = stages.process(risk, _raw(), store)

    assert out.type is EventType.SIGNAL_VALIDATED
    assert json.loads(store.get(keys.risk_strategy_notional("paper", "ema_test")) or "") == {
        str(OTHER): ["5", "10000"],
        str(TOKEN): ["10", "14800"],
    }


def test_decide_when_limits_for_starts_giving_other_limits_then_the_new_ones_apply(
    store: MemoryStateStore,
) -> None:
    # The stage keeps each strategy's combined limits while `limits_for` gives the same object;
    # a new object (changed settings) must be used at once, never the kept combination.
    current = {"paper": RiskLimits()}
    risk = RiskManager(
        brokers=PAPER,
        limits_for=current.__getitem__,
        strategy_risk={"ema_test": StrategyRisk(max_trades_per_day=50)},
    )

    (first,) = stages.process(risk, _raw(), store)
    current["paper"] = RiskLimits(max_order_value=D("10000"))
    later = _signal(at=T0 + timedelta(seconds=10))  # past the duplicate window
    (second,) = stages.process(risk, _raw(later, event_id="raw-2"), store)

    assert first.type is EventType.SIGNAL_VALIDATED
    assert _reasons(second) == {"max_order_value": "order value Rs 14800.00 exceeds the limit of Rs 10000.00"}

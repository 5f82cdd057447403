"""The risk ledger: reservations and releases as pure writes, and the sums they keep."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from alphapanda.stages.risk_ledger import LedgerView, ledger_reads, release, reserve
from alphapanda.state import keys

D = Decimal
BROKER = "paper"
RELIANCE, INFY, TCS = 738561, 408065, 2953217
State = dict[str, str | None]


def _apply(state: State, writes: dict[str, str]) -> State:
    return {**state, **writes}


def _view(state: State, token: int = RELIANCE, strategy: str = "ema_a") -> LedgerView:
    return LedgerView.read(state, BROKER, token, strategy)


def test_ledger_reads_when_asked_then_names_position_notional_gross_strategy_and_open_orders_keys() -> None:
    assert ledger_reads(BROKER, RELIANCE, "ema_a") == [
        "paper:risk:position:738561",
        "paper:risk:notional:738561",
        "paper:risk:gross",
        "paper:risk:strategy:ema_a",
        "paper:risk:open_orders",
    ]


def test_ledger_view_when_nothing_reserved_yet_then_everything_is_zero() -> None:
    view = _view({})

    assert (view.position, view.notional, view.gross, view.strategy_positions, view.open_orders) == (
        0,
        D(0),
        D(0),
        {},
        0,
    )
    assert (view.strategy_exposure(), view.strategy_quantity(RELIANCE)) == (D(0), 0)


def test_reserve_when_ledger_empty_then_writes_every_key_for_the_reservation() -> None:
    writes = reserve({}, BROKER, RELIANCE, "ema_a", 10, D("1480.50"))

    # 10 x 1,480.50 = 14,805.00
    assert writes == {
        keys.risk_position(BROKER, RELIANCE): "10",
        keys.risk_notional(BROKER, RELIANCE): "14805.00",
        keys.risk_gross(BROKER): "14805.00",
        keys.risk_strategy_notional(BROKER, "ema_a"): json.dumps({"738561": ["10", "14805.00"]}),
        keys.risk_open_orders(BROKER): "1",
    }


def test_reserve_when_short_then_position_is_negative_and_notional_positive() -> None:
    state = _apply({}, reserve({}, BROKER, RELIANCE, "ema_a", -8, D("100")))

    view = _view(state)
    assert (view.position, view.notional, view.gross) == (-8, D("800"), D("800"))
    assert view.strategy_positions == {"738561": ["-8", "800"]}


def test_reserve_then_release_when_order_done_at_same_price_then_every_key_is_restored() -> None:
    state = _apply({}, reserve({}, BROKER, RELIANCE, "ema_a", 10, D("1480")))
    state = _apply(state, reserve(state, BROKER, INFY, "ema_a", -20, D("1500")))
    before = dict(state)

    state = _apply(state, reserve(state, BROKER, RELIANCE, "ema_a", -4, D("1480")))
    state = _apply(state, release(state, BROKER, RELIANCE, "ema_a", -4, D("1480"), order_done=True))

    assert state == before
    assert before[keys.risk_open_orders(BROKER)] == "2"
    assert before[keys.risk_gross(BROKER)] == "44800"  # 10 x 1,480 + 20 x 1,500


def test_reserve_then_release_when_ledger_was_empty_then_it_reads_as_empty_again() -> None:
    state = _apply({}, reserve({}, BROKER, RELIANCE, "ema_a", 10, D("1480")))

    state = _apply(state, release(state, BROKER, RELIANCE, "ema_a", 10, D("1480"), order_done=True))

    assert _view(state) == _view({})
    assert state[keys.risk_strategy_notional(BROKER, "ema_a")] == "{}"


def test_release_when_order_not_done_then_quantity_is_given_back_and_order_stays_open() -> None:
    state = _apply({}, reserve({}, BROKER, RELIANCE, "ema_a", 10, D("100")))

    # a partial fill of 6 leaves 4 unfilled, still working
    state = _apply(state, release(state, BROKER, RELIANCE, "ema_a", 4, D("100"), order_done=False))

    view = _view(state)
    assert (view.position, view.notional, view.gross, view.open_orders) == (6, D("600"), D("600"), 1)
    assert view.strategy_positions == {"738561": ["6", "600"]}


def test_release_when_order_done_and_no_order_counted_open_then_open_orders_stays_at_zero() -> None:
    writes = release({}, BROKER, RELIANCE, "ema_a", 0, D("100"), order_done=True)

    assert writes[keys.risk_open_orders(BROKER)] == "0"


def test_release_when_order_done_then_open_orders_drops_by_one() -> None:
    state: State = {keys.risk_open_orders(BROKER): "3"}

    writes = release(state, BROKER, RELIANCE, "ema_a", 0, D("100"), order_done=True)

    assert writes[keys.risk_open_orders(BROKER)] == "2"


def test_reserve_when_several_instruments_then_gross_is_the_sum_of_their_notionals() -> None:
    state: State = {}
    for token, qty, price in [
        (RELIANCE, 10, "100"),
        (INFY, -5, "200"),
        (TCS, 3, "3000"),
        (RELIANCE, 5, "110"),
    ]:
        state = _apply(state, reserve(state, BROKER, token, "ema_a", qty, D(price)))

    # RELIANCE re-marked at its last change: 15 x 110 = 1,650; INFY 5 x 200 = 1,000; TCS 3 x 3,000 = 9,000
    notionals = [state[keys.risk_notional(BROKER, t)] for t in (RELIANCE, INFY, TCS)]
    assert notionals == ["1650", "1000", "9000"]
    assert state[keys.risk_gross(BROKER)] == "11650"


def test_reserve_when_two_strategies_share_an_instrument_then_position_is_shared_exposure_is_not() -> None:
    state = _apply({}, reserve({}, BROKER, RELIANCE, "ema_a", 10, D("100")))
    state = _apply(state, reserve(state, BROKER, RELIANCE, "ema_b", -4, D("100")))

    assert _view(state).position == 6
    assert _view(state, strategy="ema_a").strategy_positions == {"738561": ["10", "1000"]}
    assert _view(state, strategy="ema_b").strategy_positions == {"738561": ["-4", "400"]}
    assert state[keys.risk_gross(BROKER)] == "600"


def test_after_when_asked_then_predicts_the_gross_and_strategy_exposure_reserve_would_write() -> None:
    state = _apply({}, reserve({}, BROKER, INFY, "ema_a", 20, D("1500")))
    state = _apply(state, reserve(state, BROKER, RELIANCE, "ema_a", 10, D("1480")))

    gross, strategy = _view(state).after(RELIANCE, -25, D("1490"))

    # RELIANCE 10 -> -15 at 1,490 = 22,350; INFY 30,000 stays: 52,350 for both
    assert (gross, strategy) == (D("52350"), D("52350"))
    state = _apply(state, reserve(state, BROKER, RELIANCE, "ema_a", -25, D("1490")))
    assert D(state[keys.risk_gross(BROKER)] or "") == gross
    assert _view(state).strategy_exposure() == strategy


# --- invariants over any sequence of reservations and releases --------------------------------

TOKENS = (RELIANCE, INFY, TCS)
STRATEGIES = ("ema_a", "ema_b")
_op = st.tuples(
    st.sampled_from(("reserve", "release")),
    st.sampled_from(TOKENS),
    st.sampled_from(STRATEGIES),
    st.integers(-500, 500).filter(bool),
    st.decimals(min_value=D("0.05"), max_value=D("50000"), places=2),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=30))
def test_ledger_when_any_sequence_of_reserves_and_releases_then_sums_hold(
    ops: list[tuple[str, int, str, int, Decimal, bool]],
) -> None:
    state: State = {}
    position = dict.fromkeys(TOKENS, 0)
    by_strategy = {(s, t): 0 for s in STRATEGIES for t in TOKENS}
    open_orders = 0
    for kind, token, strategy, qty, price, done in ops:
        if kind == "reserve":
            state = _apply(state, reserve(state, BROKER, token, strategy, qty, price))
            signed, open_orders = qty, open_orders + 1
        else:
            state = _apply(state, release(state, BROKER, token, strategy, qty, price, order_done=done))
            signed, open_orders = -qty, max(open_orders - int(done), 0)
        position[token] += signed
        by_strategy[(strategy, token)] += signed

        assert D(state[keys.risk_notional(BROKER, token)] or "") == abs(position[token]) * price

    notionals = [D(state.get(keys.risk_notional(BROKER, t)) or 0) for t in TOKENS]
    assert D(state.get(keys.risk_gross(BROKER)) or 0) == sum(notionals, D(0))
    assert {t: int(state.get(keys.risk_position(BROKER, t)) or 0) for t in TOKENS} == position
    for strategy in STRATEGIES:
        view = LedgerView.read(state, BROKER, RELIANCE, strategy)
        assert {t: view.strategy_quantity(t) for t in TOKENS} == {
            t: by_strategy[(strategy, t)] for t in TOKENS
        }
        assert all(q != "0" for q, _n in view.strategy_positions.values())
    assert int(state.get(keys.risk_open_orders(BROKER)) or 0) == open_orders

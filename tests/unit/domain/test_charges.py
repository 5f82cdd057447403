"""Charges engine: hand-worked examples, the brokerage cap, dated rates, and the table's validation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphapanda.domain.charges import (
    ChargeBreakdown,
    ChargeRates,
    ChargeSchedule,
    ChargeScheduleError,
    ChargeSide,
    Exchange,
    ExecutedOrder,
    NoRatesInForceError,
    Rounding,
    Segment,
    charges_for,
    load_charge_schedule,
    segment_for,
)
from alphapanda.events import IST, OrderFilled, Product, Side

D = Decimal
# A date under the shipped table's current entries (effective 2026-04-01).
TRADE_DATE = date(2026, 11, 25)


@pytest.fixture(scope="module")
def shipped() -> ChargeSchedule:
    return load_charge_schedule()


def _rates(schedule: ChargeSchedule, segment: Segment, on: date = TRADE_DATE) -> ChargeRates:
    return schedule.rates_on(on, segment, Exchange.NSE)


def _breakdown(
    brokerage: str, stt: str, exchange_txn: str, sebi: str, gst: str, stamp_duty: str
) -> ChargeBreakdown:
    return ChargeBreakdown(D(brokerage), D(stt), D(exchange_txn), D(sebi), D(gst), D(stamp_duty))


# --- worked examples: every figure below is arithmetic on the documented rates, not engine output ---
#
# Rates (shipped table, NSE, from 2026-04-01): exchange transaction 0.00307% of turnover, SEBI
# Rs 10 per crore (= turnover / 1,00,00,000 x 10), GST 18% of (brokerage + exchange + SEBI).
# Delivery: brokerage 0, STT 0.1% both sides, stamp 0.015% buy side.
# Intraday: brokerage min(0.03%, Rs 20) per order, STT 0.025% sell side, stamp 0.003% buy side.
# STT is rounded half-up to the rupee, every other component half-up to the paisa, per order.
#
# Buy 100 @ 1,500.00 -> turnover 1,50,000.00;  sell 100 @ 1,520.00 -> turnover 1,52,000.00.
#   exchange, buy  : 150000 x 0.00307 / 100 = 4.605   -> 4.61   (half-up; banker's rounding gives 4.60)
#   exchange, sell : 152000 x 0.00307 / 100 = 4.6664  -> 4.67
#   SEBI, buy      : 150000 x 10 / 10000000 = 0.15
#   SEBI, sell     : 152000 x 10 / 10000000 = 0.152   -> 0.15


def test_charge_round_trip_when_delivery_on_nse_then_every_component_matches_hand_arithmetic(
    shipped: ChargeSchedule,
) -> None:
    rates = _rates(shipped, Segment.EQUITY_DELIVERY)

    buy = charges_for(ExecutedOrder(Side.BUY, 100, D("1500.00")), rates)
    sell = charges_for(ExecutedOrder(Side.SELL, 100, D("1520.00")), rates)

    # Buy: brokerage 0; STT 150000 x 0.1% = 150.00 -> 150; exchange 4.61; SEBI 0.15;
    # GST 18% x (0 + 4.61 + 0.15) = 0.18 x 4.76 = 0.8568 -> 0.86; stamp 150000 x 0.015% = 22.50.
    # Total 0 + 150 + 4.61 + 0.15 + 0.86 + 22.50 = 178.12.
    assert buy == _breakdown("0.00", "150.00", "4.61", "0.15", "0.86", "22.50")
    assert buy.total == D("178.12")
    # Sell: brokerage 0; STT 152000 x 0.1% = 152.00 -> 152; exchange 4.67; SEBI 0.15;
    # GST 18% x (0 + 4.67 + 0.15) = 0.18 x 4.82 = 0.8676 -> 0.87; stamp 0 (buy side only).
    # Total 152 + 4.67 + 0.15 + 0.87 = 157.69.
    assert sell == _breakdown("0.00", "152.00", "4.67", "0.15", "0.87", "0.00")
    assert sell.total == D("157.69")
    # Round trip 178.12 + 157.69 = 335.81.
    assert (buy + sell).total == D("335.81")


def test_charge_round_trip_when_intraday_on_nse_then_every_component_matches_hand_arithmetic(
    shipped: ChargeSchedule,
) -> None:
    rates = _rates(shipped, Segment.EQUITY_INTRADAY)

    buy = charges_for(ExecutedOrder(Side.BUY, 100, D("1500.00")), rates)
    sell = charges_for(ExecutedOrder(Side.SELL, 100, D("1520.00")), rates)

    # Buy: brokerage min(150000 x 0.03% = 45.00, 20) = 20.00; STT 0 (sell side only);
    # exchange 4.61; SEBI 0.15; GST 18% x (20 + 4.61 + 0.15) = 0.18 x 24.76 = 4.4568 -> 4.46;
    # stamp 150000 x 0.003% = 4.50. Total 20 + 4.61 + 0.15 + 4.46 + 4.50 = 33.72.
    assert buy == _breakdown("20.00", "0.00", "4.61", "0.15", "4.46", "4.50")
    assert buy.total == D("33.72")
    # Sell: brokerage min(152000 x 0.03% = 45.60, 20) = 20.00; STT 152000 x 0.025% = 38.00 -> 38;
    # exchange 4.67; SEBI 0.15; GST 18% x (20 + 4.67 + 0.15) = 0.18 x 24.82 = 4.4676 -> 4.47;
    # stamp 0. Total 20 + 38 + 4.67 + 0.15 + 4.47 = 67.29.
    assert sell == _breakdown("20.00", "38.00", "4.67", "0.15", "4.47", "0.00")
    assert sell.total == D("67.29")
    # Round trip 33.72 + 67.29 = 101.01.
    assert ChargeBreakdown.sum([buy, sell]).total == D("101.01")


def test_charge_option_round_trip_when_2026_rates_then_flat_brokerage_and_premium_levies(
    shipped: ChargeSchedule,
) -> None:
    rates = _rates(shipped, segment_for(Product.NRML, "CE"))

    # One NIFTY lot of 75: buy @ 120.50 (premium turnover 75 x 120.50 = 9,037.50), sell @ 130.00
    # (9,750.00). Options, NSE, from 2026-04-01: brokerage flat Rs 20; STT 0.15% of sell premium;
    # exchange 0.03553% of premium; SEBI Rs 10/crore; stamp 0.003% of buy premium.
    buy = charges_for(ExecutedOrder(Side.BUY, 75, D("120.50")), rates)
    sell = charges_for(ExecutedOrder(Side.SELL, 75, D("130.00")), rates)

    # Buy: exchange 9037.50 x 0.0003553 = 3.21102375 -> 3.21; SEBI 0.0090375 -> 0.01;
    # GST 0.18 x (20 + 3.21 + 0.01) = 0.18 x 23.22 = 4.1796 -> 4.18;
    # stamp 9037.50 x 0.00003 = 0.271125 -> 0.27. Total 20 + 3.21 + 0.01 + 4.18 + 0.27 = 27.67.
    assert buy == _breakdown("20.00", "0.00", "3.21", "0.01", "4.18", "0.27")
    assert buy.total == D("27.67")
    # Sell: STT 9750 x 0.0015 = 14.625 -> 15; exchange 9750 x 0.0003553 = 3.464175 -> 3.46;
    # SEBI 0.00975 -> 0.01; GST 0.18 x (20 + 3.46 + 0.01) = 0.18 x 23.47 = 4.2246 -> 4.22; stamp 0.
    # Total 20 + 15 + 3.46 + 0.01 + 4.22 = 42.69.
    assert sell == _breakdown("20.00", "15.00", "3.46", "0.01", "4.22", "0.00")
    assert sell.total == D("42.69")


# --- brokerage cap, rounding, inputs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "quantity", "price", "brokerage"),
    [
        # 0.03% of 1,000.00 = 0.30, under the cap.
        (Segment.EQUITY_INTRADAY, 10, "100.00", "0.30"),
        # 0.03% of 66,000.00 = 19.80, just under the cap.
        (Segment.EQUITY_INTRADAY, 1, "66000.00", "19.80"),
        # 0.03% of 70,000.00 = 21.00, just over: capped at 20.
        (Segment.EQUITY_INTRADAY, 1, "70000.00", "20.00"),
        # 0.03% of 10,00,000 = 300.00, capped at 20.
        (Segment.EQUITY_INTRADAY, 1000, "1000.00", "20.00"),
        # Futures: 0.03% of 25,000 x 50 = 375.00, capped at 20.
        (Segment.FUTURES, 50, "25000.00", "20.00"),
        # Options: flat 20 however small the premium.
        (Segment.OPTIONS, 75, "0.05", "20.00"),
        # Delivery: zero brokerage.
        (Segment.EQUITY_DELIVERY, 1000, "1000.00", "0.00"),
    ],
)
def test_charge_order_when_turnover_varies_then_brokerage_is_min_of_percentage_and_rs_20_cap(
    shipped: ChargeSchedule, segment: Segment, quantity: int, price: str, brokerage: str
) -> None:
    fill = ExecutedOrder(Side.BUY, quantity, D(price))

    assert charges_for(fill, _rates(shipped, segment)).brokerage == D(brokerage)


@pytest.mark.parametrize(
    ("quantity", "price", "stt"),
    [
        (20, "103.55", "1.00"),  # 2071.00 x 0.025% = 0.51775: 52 paise round up to Rs 1
        (10, "150.00", "0.00"),  # 1500.00 x 0.025% = 0.375: under 50 paise rounds down to 0
        (10, "200.00", "1.00"),  # 2000.00 x 0.025% = 0.50: exactly 50 paise rounds up
    ],
)
def test_charge_intraday_sell_when_stt_has_paise_then_stt_is_rounded_half_up_to_the_rupee(
    shipped: ChargeSchedule, quantity: int, price: str, stt: str
) -> None:
    fill = ExecutedOrder(Side.SELL, quantity, D(price))

    assert charges_for(fill, _rates(shipped, Segment.EQUITY_INTRADAY)).stt == D(stt)


def test_charge_order_when_given_an_order_filled_event_then_it_is_charged_like_an_executed_order(
    shipped: ChargeSchedule,
) -> None:
    event = OrderFilled(
        instrument_token=738561,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        order_id="o-1",
        fill_id="f-1",
        strategy="ema_fast",
        side=Side.SELL,
        quantity=100,
        price=D("1520.00"),
        product=Product.MIS,
        filled_at=datetime(2026, 11, 25, 10, 0, tzinfo=IST),
    )
    rates = _rates(shipped, Segment.EQUITY_INTRADAY)

    assert charges_for(event, rates) == charges_for(ExecutedOrder(Side.SELL, 100, D("1520.00")), rates)


def test_charge_order_when_price_is_a_float_then_type_error(shipped: ChargeSchedule) -> None:
    fill = ExecutedOrder(Side.BUY, 1, 1500.0)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="Decimal"):
        charges_for(fill, _rates(shipped, Segment.EQUITY_DELIVERY))


def test_charge_order_when_quantity_is_not_positive_then_value_error(shipped: ChargeSchedule) -> None:
    with pytest.raises(ValueError, match="quantity"):
        charges_for(ExecutedOrder(Side.BUY, 0, D("10")), _rates(shipped, Segment.EQUITY_DELIVERY))


@given(
    segment=st.sampled_from(list(Segment)),
    side=st.sampled_from(list(Side)),
    quantity=st.integers(min_value=1, max_value=100_000),
    paise=st.integers(min_value=5, max_value=10_000_000),
)
def test_charge_any_order_when_computed_then_components_are_non_negative_paise_summing_to_total(
    shipped: ChargeSchedule, segment: Segment, side: Side, quantity: int, paise: int
) -> None:
    rates = shipped.rates_on(TRADE_DATE, segment, Exchange.NSE)

    result = charges_for(ExecutedOrder(side, quantity, D(paise) / 100), rates)

    parts = [result.brokerage, result.stt, result.exchange_txn, result.sebi, result.gst, result.stamp_duty]
    assert all(part >= 0 and part.as_tuple().exponent == -2 for part in parts)
    assert sum(parts, D(0)) == result.total
    assert result.brokerage <= D(20)


# --- picking the entry in force -------------------------------------------------------------------

_DATED_TABLE = """
schema_version: 1
entries:
  - broker: zerodha
    segment: equity_intraday
    exchange: NSE
    effective_from: 2020-01-01
    source: "test: older rates"
    brokerage:    {kind: percentage, rate_pct: 0.01, cap: 20, rounding: paisa}
    stt:          {rate_pct: 0.025, side: sell, rounding: rupee}
    exchange_txn: {rate_pct: 0.00325, rounding: paisa}
    sebi:         {per_crore: 5, rounding: paisa}
    gst:          {rate_pct: 18, rounding: paisa}
    stamp_duty:   {rate_pct: 0.003, side: buy, rounding: paisa}
  - broker: zerodha
    segment: equity_intraday
    exchange: NSE
    effective_from: 2021-01-01
    source: "test: newer rates"
    brokerage:    {kind: percentage, rate_pct: 0.03, cap: 20, rounding: paisa}
    stt:          {rate_pct: 0.025, side: sell, rounding: rupee}
    exchange_txn: {rate_pct: 0.00345, rounding: paisa}
    sebi:         {per_crore: 10, rounding: paisa}
    gst:          {rate_pct: 18, rounding: paisa}
    stamp_duty:   {rate_pct: 0.003, side: buy, rounding: paisa}
"""


@pytest.fixture
def dated(tmp_path: Path) -> ChargeSchedule:
    path = tmp_path / "charges.yaml"
    path.write_text(_DATED_TABLE)
    return load_charge_schedule(path)


@pytest.mark.parametrize(
    ("trade_date", "source", "brokerage", "exchange_txn"),
    [
        # Older set: 0.01% of 50,000 = 5.00; exchange 50000 x 0.00325% = 1.625 -> 1.63.
        (date(2020, 1, 1), "test: older rates", "5.00", "1.63"),
        (date(2020, 12, 31), "test: older rates", "5.00", "1.63"),
        # Newer set: 0.03% of 50,000 = 15.00; exchange 50000 x 0.00345% = 1.725 -> 1.73.
        (date(2021, 1, 1), "test: newer rates", "15.00", "1.73"),
        (date(2030, 6, 1), "test: newer rates", "15.00", "1.73"),
    ],
)
def test_pick_rates_when_trade_date_is_either_side_of_a_change_then_the_entry_in_force_applies(
    dated: ChargeSchedule, trade_date: date, source: str, brokerage: str, exchange_txn: str
) -> None:
    rates = dated.rates_on(trade_date, Segment.EQUITY_INTRADAY, Exchange.NSE)
    result = charges_for(ExecutedOrder(Side.BUY, 100, D("500.00")), rates)

    assert rates.source == source
    assert (result.brokerage, result.exchange_txn) == (D(brokerage), D(exchange_txn))


def test_pick_rates_when_date_precedes_every_entry_then_no_rates_in_force_error(
    dated: ChargeSchedule,
) -> None:
    with pytest.raises(NoRatesInForceError, match="earliest entry starts 2020-01-01"):
        dated.rates_on(date(2019, 12, 31), Segment.EQUITY_INTRADAY, Exchange.NSE)


def test_pick_rates_when_segment_has_no_entries_then_no_rates_in_force_error(dated: ChargeSchedule) -> None:
    with pytest.raises(NoRatesInForceError, match="options on NSE"):
        dated.rates_on(date(2025, 1, 1), Segment.OPTIONS, Exchange.NSE)


def test_charge_option_sell_when_traded_before_april_2026_then_the_older_stt_applies(
    shipped: ChargeSchedule,
) -> None:
    sell = ExecutedOrder(Side.SELL, 75, D("130.00"))  # premium turnover 9,750.00

    before = charges_for(sell, _rates(shipped, Segment.OPTIONS, date(2026, 3, 31)))
    after = charges_for(sell, _rates(shipped, Segment.OPTIONS, date(2026, 4, 1)))

    # Until 2026-03-31: STT 0.1% x 9750 = 9.75 -> 10; exchange 0.03503% x 9750 = 3.415425 -> 3.42.
    assert (before.stt, before.exchange_txn) == (D("10.00"), D("3.42"))
    # From 2026-04-01: STT 0.15% x 9750 = 14.625 -> 15; exchange 0.03553% x 9750 = 3.464175 -> 3.46.
    assert (after.stt, after.exchange_txn) == (D("15.00"), D("3.46"))


def test_pick_rates_when_given_a_utc_instant_then_its_ist_date_decides(shipped: ChargeSchedule) -> None:
    # 2026-03-31 20:00 UTC is 2026-04-01 01:30 IST: the new F&O rates are already in force.
    instant = datetime(2026, 3, 31, 20, 0, tzinfo=UTC)

    assert shipped.rates_on(instant, Segment.FUTURES, Exchange.NSE).effective_from == date(2026, 4, 1)


def test_pick_rates_when_given_a_naive_datetime_then_value_error(shipped: ChargeSchedule) -> None:
    with pytest.raises(ValueError, match="naive"):
        shipped.rates_on(datetime(2026, 4, 1, 10, 0), Segment.FUTURES, Exchange.NSE)


def test_pick_rates_when_exchange_is_kite_fno_name_then_the_cash_exchange_rates_apply(
    shipped: ChargeSchedule,
) -> None:
    assert shipped.rates_on(TRADE_DATE, "options", "NFO") == shipped.rates_on(TRADE_DATE, "options", "NSE")
    assert shipped.rates_on(TRADE_DATE, "options", "BFO").exchange is Exchange.BSE


def test_load_shipped_schedule_when_read_then_every_segment_and_exchange_has_current_rates(
    shipped: ChargeSchedule,
) -> None:
    for segment in Segment:
        for exchange in Exchange:
            rates = shipped.rates_on(TRADE_DATE, segment, exchange)
            assert rates.effective_from == date(2026, 4, 1)
            assert rates.source


# --- segment mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product", "instrument_type", "segment"),
    [
        ("CNC", "EQ", Segment.EQUITY_DELIVERY),
        ("MIS", "EQ", Segment.EQUITY_INTRADAY),
        ("NRML", "FUT", Segment.FUTURES),
        ("MIS", "FUT", Segment.FUTURES),
        ("NRML", "CE", Segment.OPTIONS),
        ("MIS", "PE", Segment.OPTIONS),
        (Product.CNC, "eq", Segment.EQUITY_DELIVERY),
    ],
)
def test_map_segment_when_product_and_instrument_type_given_then_the_charges_segment(
    product: str, instrument_type: str, segment: Segment
) -> None:
    assert segment_for(product, instrument_type) is segment


@pytest.mark.parametrize(("product", "instrument_type"), [("CNC", "FUT"), ("NRML", "EQ"), ("MTF", "EQ")])
def test_map_segment_when_combination_is_not_priced_then_value_error(
    product: str, instrument_type: str
) -> None:
    with pytest.raises(ValueError, match="no charges segment"):
        segment_for(product, instrument_type)


# --- a bad table ----------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_load_schedule_when_a_rate_is_invalid_then_one_error_names_the_entry_and_field(
    tmp_path: Path,
) -> None:
    bad = _DATED_TABLE.replace("{rate_pct: 0.00345, rounding: paisa}", "{rate_pct: -1, rounding: paisa}")

    with pytest.raises(ChargeScheduleError) as caught:
        load_charge_schedule(_write(tmp_path, bad))

    message = str(caught.value)
    assert "entry 2 (zerodha equity_intraday NSE from 2021-01-01)" in message
    assert "field 'exchange_txn.rate_pct'" in message
    assert "bad.yaml" in message


def test_load_schedule_when_a_key_is_misspelt_then_the_error_names_it(tmp_path: Path) -> None:
    bad = _DATED_TABLE.replace("stamp_duty:", "stamp_dutty:", 1)

    with pytest.raises(ChargeScheduleError, match=r"entry 1 .*field 'stamp_dutty': Extra inputs"):
        load_charge_schedule(_write(tmp_path, bad))


def test_load_schedule_when_a_side_is_unknown_then_the_error_names_the_field(tmp_path: Path) -> None:
    bad = _DATED_TABLE.replace("side: sell", "side: seller", 1)

    with pytest.raises(ChargeScheduleError, match=r"entry 1 .*field 'stt.side'"):
        load_charge_schedule(_write(tmp_path, bad))


def test_load_schedule_when_two_entries_share_a_date_then_error(tmp_path: Path) -> None:
    bad = _DATED_TABLE.replace("2021-01-01", "2020-01-01")

    with pytest.raises(ChargeScheduleError, match=r"entry 2 .* repeats entry 1"):
        load_charge_schedule(_write(tmp_path, bad))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("entries: [\n", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("schema_version: 2\nentries: []\n", "schema_version must be 1"),
        ("schema_version: 1\nentries: []\n", "non-empty list"),
    ],
)
def test_load_schedule_when_the_document_is_malformed_then_error(
    tmp_path: Path, text: str, complaint: str
) -> None:
    with pytest.raises(ChargeScheduleError, match=complaint):
        load_charge_schedule(_write(tmp_path, text))


def test_load_schedule_when_the_file_is_missing_then_error_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ChargeScheduleError, match=r"missing\.yaml"):
        load_charge_schedule(tmp_path / "missing.yaml")


@pytest.mark.parametrize("charge_side", list(ChargeSide))
@pytest.mark.parametrize("side", list(Side))
def test_applies_to_when_compared_by_name_then_the_same_answer(charge_side: ChargeSide, side: Side) -> None:
    # `applies_to` compares members by identity; its meaning is the names': "both", or the side's own.
    assert charge_side.applies_to(side) is (charge_side.value in ("both", side.value.lower()))


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("amount", ["0", "0.004", "0.005", "1.495", "1.5", "-0.004", "12345.67891", "7"])
def test_rounding_apply_when_any_amount_then_half_up_to_its_unit_written_with_paise(
    rounding: Rounding, amount: str
) -> None:
    expected = Decimal(amount).quantize(rounding.quantum, rounding=ROUND_HALF_UP).quantize(Decimal("0.01"))
    got = rounding.apply(Decimal(amount))
    assert str(got) == str(expected)

"""The backtest's fast path gives exactly what the general path (every event through
`stages.process`, as the pipeline runs it) gives: same report bytes, fills and stored state.

The workloads make the shortcuts matter: orders that rest (latency, and market orders larger
than the displayed depth leave DAY remainders), the MIS square-off, DAY expiry at the close,
signals the risk manager rejects after the close, and two paper brokers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphapanda.brokers.paper import PaperTrader
from alphapanda.config import FillSettings, Settings, load_settings
from alphapanda.domain.calendar import load_trading_calendar
from alphapanda.domain.charges import load_charge_schedule
from alphapanda.domain.report import EquityTracker
from alphapanda.events import IST, Event, OrderFilled, derive_id
from alphapanda.feed import TickStamper
from alphapanda.runtime.backtest import Backtest, BacktestResult, BacktestStateStore
from alphapanda.runtime.bootstrap import build_core
from alphapanda.runtime.feed import fixed_simulation
from alphapanda.runtime.tickfiles import TickRow, read_tick_rows, row_of, write_ticks
from alphapanda.state.store import MemoryStateStore, StateStore

STRATEGIES = """
strategies:
  - name: big_cross
    kind: ema_crossover
    instruments: [RELIANCE, HDFCBANK, INFY, TCS]
    brokers: [paper, paper-2]
    params: {fast: 3, slow: 8, quantity: 400}
  - name: small_cross
    kind: ema_crossover
    instruments: [RELIANCE, INFY]
    brokers: [paper]
    params: {fast: 2, slow: 5, quantity: 10}
"""
CHARGES = load_charge_schedule()
CALENDAR = load_trading_calendar()
HUGE = 10**12
LIMITS = {
    "max_order_value": HUGE,
    "max_position_quantity": 10**9,
    "max_position_value": HUGE,
    "max_gross_exposure": HUGE,
    "daily_loss_limit": HUGE,
    "max_trades_per_day": 10**9,
    "max_open_orders": 10**9,
}
START = datetime(2026, 1, 5, 15, 12, tzinfo=IST)
"""Eight minutes before the 15:20 square-off, eighteen before the 15:30 close (a Monday)."""
TICKS = 4 * 25 * 60
"""Four instruments, one tick each per second, for 25 minutes: past the close."""


def _settings(tmp: Path) -> Settings:
    (tmp / "strategies.yaml").write_text(STRATEGIES)
    broker = {
        # Latency makes every market order rest until a later tick; depth leaves remainders.
        "fills": {"latency_ms": 1500, "walk_depth": True},
        "risk": LIMITS,
        "starting_cash": 10**9,
    }
    return load_settings(
        brokers=("paper", "paper-2"),
        strategies_file=tmp / "strategies.yaml",
        broker={"paper": broker, "paper-2": broker},
    )


def _ticks(settings: Settings, count: int = TICKS, start: datetime = START) -> list[Event]:
    core = build_core(settings)
    names = ("RELIANCE", "HDFCBANK", "INFY", "TCS")
    instruments = [i for i in core.instruments if i.tradingsymbol in names]
    stamper = TickStamper()
    return [stamper.stamp(t) for t in fixed_simulation(instruments, 5, start, count)]


def _run(
    settings: Settings, ticks: list[Event] | list[TickRow], store: StateStore, *, fast: bool
) -> BacktestResult:
    return Backtest(build_core(settings), store, fast=fast).run(ticks)


def _fill_ids(result: BacktestResult) -> list[tuple[str, str]]:
    out = []
    for event in result.fills:
        assert isinstance(event.data, OrderFilled)
        out.append((event.id, str(event.data.price)))
    return out


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(tmp_path_factory.mktemp("fast"))


@pytest.fixture(scope="module")
def ticks(settings: Settings) -> list[Event]:
    return _ticks(settings)


@pytest.fixture(scope="module")
def general(settings: Settings, ticks: list[Event]) -> tuple[BacktestResult, dict[str, object]]:
    store = BacktestStateStore()
    result = _run(settings, ticks, store, fast=False)
    return result, store.snapshot()


def test_workload_when_run_then_it_exercises_resting_orders_square_off_expiry_and_rejections(
    general: tuple[BacktestResult, dict[str, object]],
) -> None:
    result, snapshot = general
    events = result.report.events
    fills = [e.data for e in result.fills if isinstance(e.data, OrderFilled)]
    assert any(f.flatten for f in fills), "no MIS square-off fill"
    assert any(f.remaining_quantity > 0 for f in fills), "no partial fill (no remainder rested)"
    assert events.get("ORDER_CANCELLED", 0) > 0, "no resting order was cancelled (square-off or expiry)"
    assert events.get("SIGNAL_REJECTED", 0) > 0, "no signal after the close was rejected"
    assert {e.broker for e in result.fills} == {"paper", "paper-2"}
    assert any(k.startswith("paper:squareoff:") for k in snapshot)


def test_fast_path_when_compared_with_the_general_path_then_report_fills_and_state_are_identical(
    settings: Settings, ticks: list[Event], general: tuple[BacktestResult, dict[str, object]]
) -> None:
    expected, expected_state = general
    store = BacktestStateStore()
    fast = _run(settings, ticks, store, fast=True)
    assert fast.report.dumps() == expected.report.dumps()
    assert _fill_ids(fast) == _fill_ids(expected)
    assert dict(fast.events) == dict(expected.events)
    assert store.snapshot() == expected_state


def test_general_path_when_on_the_memory_store_then_it_matches_the_backtest_store(
    settings: Settings, ticks: list[Event], general: tuple[BacktestResult, dict[str, object]]
) -> None:
    expected, expected_state = general
    memory = MemoryStateStore()
    result = _run(settings, ticks, memory, fast=False)
    assert result.report.dumps() == expected.report.dumps()
    assert memory.snapshot() == expected_state


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_fast_path_when_fed_rows_from_a_tick_file_then_it_equals_the_run_on_stamped_events(
    settings: Settings,
    ticks: list[Event],
    general: tuple[BacktestResult, dict[str, object]],
    tmp_path: Path,
    suffix: str,
) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path / f"ticks{suffix}"
    write_ticks(path, [e.data for e in ticks])  # type: ignore[misc]
    rows = list(read_tick_rows(path))
    assert [r.event().id for r in rows[:50]] == [e.id for e in ticks[:50]]
    result = _run(settings, rows, BacktestStateStore(), fast=True)
    assert result.report.dumps() == general[0].report.dumps()
    assert _fill_ids(result) == _fill_ids(general[0])


REPLAY_STRATEGIES = """
strategies:
  - name: cross
    kind: ema_crossover
    instruments: [RELIANCE, HDFCBANK]
    brokers: [paper, paper-replay]
    params: {fast: 2, slow: 5, quantity: 50}
"""


def test_fast_path_when_some_ticks_are_replayed_for_a_replay_broker_then_it_equals_the_general_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "strategies.yaml").write_text(REPLAY_STRATEGIES)
    broker = {"fills": {"latency_ms": 1500}, "risk": LIMITS}
    settings = load_settings(
        brokers=("paper", "paper-replay"),
        strategies_file=tmp_path / "strategies.yaml",
        broker={"paper": broker, "paper-replay": broker},
    )
    live = _ticks(settings, count=1200)[::2]  # RELIANCE and HDFCBANK only
    ticks: list[Event] = []
    for n, event in enumerate(live):
        ticks.append(event)
        if n % 3 == 0:  # a replayed copy, as `alphapanda replay` publishes it
            replayed = derive_id(event.id, "replay", "paper-replay")
            ticks.append(
                replace(
                    event, id=replayed, correlationid=replayed, causationid=event.id, broker="paper-replay"
                )
            )
    general_store = BacktestStateStore()
    general = _run(settings, ticks, general_store, fast=False)
    fast_store = BacktestStateStore()
    fast = _run(settings, ticks, fast_store, fast=True)
    assert {e.broker for e in general.fills} == {"paper", "paper-replay"}
    assert fast.report.dumps() == general.report.dumps()
    assert _fill_ids(fast) == _fill_ids(general)
    assert fast_store.snapshot() == general_store.snapshot()


TWIN_STRATEGIES = """
strategies:
  - name: twin_a
    kind: ema_crossover
    instruments: [RELIANCE, HDFCBANK, INFY, TCS]
    brokers: [paper, paper-2]
    params: {fast: 3, slow: 8, quantity: 300}
  - name: twin_b
    kind: ema_crossover
    instruments: [RELIANCE, HDFCBANK, INFY, TCS]
    brokers: [paper]
    params: {fast: 3, slow: 8, quantity: 300}
"""


def test_fast_path_when_orders_share_a_ticks_depth_at_once_then_it_equals_the_general_path(
    tmp_path: Path,
) -> None:
    # No latency: twin strategies signal on the same tick and both orders trade against its
    # depth at once, the second on what the first left (`TradingEngine.decide` writes it); their
    # remainders rest, and the matcher's takes on later ticks leave depth to new orders too.
    (tmp_path / "strategies.yaml").write_text(TWIN_STRATEGIES)
    broker = {"fills": {"latency_ms": 0, "walk_depth": True}, "risk": LIMITS, "starting_cash": 10**9}
    settings = load_settings(
        brokers=("paper", "paper-2"),
        strategies_file=tmp_path / "strategies.yaml",
        broker={"paper": broker, "paper-2": broker},
    )
    ticks = _ticks(settings, count=4 * 10 * 60, start=datetime(2026, 1, 5, 11, 0, tzinfo=IST))
    general_store, fast_store = BacktestStateStore(), BacktestStateStore()

    general = _run(settings, ticks, general_store, fast=False)
    fast = _run(settings, ticks, fast_store, fast=True)

    fills = [e.data for e in general.fills if isinstance(e.data, OrderFilled)]
    # The workload proves something: twin orders filled on one tick, the second at a worse
    # first price than the first's (it began where the first left the depth).
    by_tick: dict[tuple[str, int, datetime], list[OrderFilled]] = {}
    for f in fills:
        if f.strategy in ("twin_a", "twin_b") and not f.flatten:
            by_tick.setdefault((f.order_id, f.instrument_token, f.filled_at), []).append(f)
    same_tick: dict[tuple[int, datetime], set[str]] = {}
    for _order, token, at in by_tick:
        same_tick.setdefault((token, at), set()).add(_order)
    assert any(len(orders) > 1 for orders in same_tick.values()), "no two orders traded on one tick"
    assert fast.report.dumps() == general.report.dumps()
    assert _fill_ids(fast) == _fill_ids(general)
    assert fast_store.snapshot() == general_store.snapshot()


def test_rows_when_made_from_events_then_they_give_back_the_same_events(ticks: list[Event]) -> None:
    rows = [row_of(e, 0)._replace(stamped=None) for e in ticks[:40]]
    seq: dict[int, int] = {}
    for row, event in zip(rows, ticks[:40], strict=True):
        n = seq.get(row.instrument_token, 0)
        seq[row.instrument_token] = n + 1
        assert row._replace(seq=n).event() == event


def test_store_when_a_stage_writes_a_derived_key_then_reads_keep_the_derived_value() -> None:
    store = BacktestStateStore()
    value = ["first"]
    store.derive("market:quote:1", lambda: value[0])
    store.put("n", 7)
    store.set_text("t", "[]")
    assert store.get("market:quote:1") == "first"
    value[0] = "second"
    assert store.get("market:quote:1") == "second"
    assert store.get("n") == "7" and store.load("n", int) == 7
    assert store.load("t", str) == "[]" and store.has_text("t") == "[]" and store.has_text("n") is None
    assert store.snapshot() == {"market:quote:1": "second", "n": "7", "t": "[]"}


@given(
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.sampled_from([UTC, IST])
    ),
    st.times(),
)
def test_square_off_instant_when_compared_with_square_off_due_then_they_agree(
    at: datetime, cutoff: time
) -> None:
    trader = PaperTrader({}, fills=FillSettings(square_off_time=cutoff), charges=CHARGES, calendar=CALENDAR)
    day = at.astimezone(IST).date()
    assert (at >= trader.square_off_instant(day, at)) == trader.square_off_due(at)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from([0.5, 1.0, 60.0, 7.3, 0.0005]))
def test_bar_span_when_a_mark_falls_inside_then_on_mark_would_not_sample(offset_ms: int, bar: float) -> None:
    tracker = EquityTracker(starting_cash=1_000_000, bar_seconds=bar)  # type: ignore[arg-type]
    at = datetime(2026, 1, 5, 3, 45, tzinfo=UTC) + timedelta(milliseconds=offset_ms)
    tracker.on_mark(1, 100, at)  # type: ignore[arg-type]
    lo, hi = tracker.bar_span(at)
    for inside in (lo, hi - timedelta(microseconds=1), at):
        if lo <= inside < hi:
            before = len(tracker.curve)
            tracker.on_mark(1, 100, inside)  # type: ignore[arg-type]
            assert len(tracker.curve) == before


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_bench_workload_when_given_as_rows_a_file_or_events_then_the_reports_are_identical(
    tmp_path: Path, suffix: str
) -> None:
    pytest.importorskip("numpy")
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    from alphapanda.bench.backtest import _core, _tick_events, _tick_rows
    from alphapanda.bench.workload import expected_orders, generate, write_tick_file

    workload = generate(3000, 5)
    path = tmp_path / f"ticks{suffix}"
    write_tick_file(workload, path)
    rows = _tick_rows(workload)
    assert list(read_tick_rows(path)) == rows
    core = _core(workload.instruments)
    from_rows = Backtest(core, BacktestStateStore()).run(rows)
    from_events = Backtest(core, BacktestStateStore(), fast=False).run(list(_tick_events(workload)))
    assert from_rows.report.trades == expected_orders(workload) > 0
    assert from_rows.report.dumps() == from_events.report.dumps()

"""`alphapanda bench backtest`: our backtest, the plain-Python bound and NautilusTrader on one workload."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import time as dtime
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from alphapanda.bench.workload import START, Workload, expected_orders, generate, write_tick_file

CENT = Decimal("0.01")


def _settings(tmp: Path, instruments: int) -> Any:
    from alphapanda.config import load_settings

    rows = [
        "instrument_token,tradingsymbol,name,exchange,segment,instrument_type,tick_size,lot_size,reference_price"
    ]
    rows += [f"{k + 1},SYM{k:03d},BENCH {k},NSE,NSE,EQ,0.01,1,100.00" for k in range(instruments)]
    (tmp / "instruments.csv").write_text("\n".join(rows) + "\n")
    (tmp / "strategies.yaml").write_text(
        "strategies:\n  - name: ema\n    kind: ema_crossover\n    instruments: all\n"
        "    brokers: [paper]\n    params: {fast: 10, slow: 20, quantity: 100}\n"
    )
    huge = 10**12
    # The workload's rules: fills at the touch, no latency, no slippage, no limit that rejects.
    # (Charges cannot be switched off by settings: the paper broker still computes them.)
    return load_settings(
        brokers=("paper",),
        instruments_file=tmp / "instruments.csv",
        strategies_file=tmp / "strategies.yaml",
        broker={
            "paper": {
                "starting_cash": huge,
                "fills": {
                    "slippage_bps": 0,
                    "fill_quote": "signal",
                    "walk_depth": False,
                    "square_off_time": dtime(23, 59, 59, 999999),
                },
                "risk": {
                    "enforce_session": False,
                    "max_order_value": huge,
                    "max_position_quantity": 10**9,
                    "max_position_value": huge,
                    "max_gross_exposure": huge,
                    "daily_loss_limit": huge,
                    "max_trades_per_day": 10**9,
                    "max_open_orders": 10**9,
                    "duplicate_window_s": 0,
                    "price_band_pct": 100,
                },
            }
        },
    )


def _tick_events(w: Workload) -> Iterator[Any]:
    from alphapanda.events import MarketTick
    from alphapanda.feed import TickStamper

    stamper = TickStamper()
    for row, prices in enumerate(w.mids_cents.tolist()):
        at = START + timedelta(seconds=row)
        for k, cents in enumerate(prices):
            mid = Decimal(cents) * CENT
            yield stamper.stamp(
                MarketTick(
                    instrument_token=k + 1,
                    tradingsymbol=f"SYM{k:03d}",
                    exchange="NSE",
                    last_price=mid,
                    bid=mid - CENT,
                    ask=mid + CENT,
                    bid_quantity=1_000_000,
                    ask_quantity=1_000_000,
                    exchange_timestamp=at,
                )
            )


NO_CHARGES = """
schema_version: 1
entries:
  - broker: zerodha
    segment: equity_intraday
    exchange: NSE
    effective_from: 2000-01-01
    source: "benchmark workload: no charges"
    brokerage:    {kind: flat, amount: 0, rounding: paisa}
    stt:          {rate_pct: 0, side: sell, rounding: rupee}
    exchange_txn: {rate_pct: 0, rounding: paisa}
    sebi:         {per_crore: 0, rounding: paisa}
    gst:          {rate_pct: 0, rounding: paisa}
    stamp_duty:   {rate_pct: 0, side: buy, rounding: paisa}
"""


def _no_charges(core: Any) -> Any:
    """`core` with paper traders on an all-zero charge schedule (the workload has no charges).

    The shipped schedule starts in 2024-10 and the workload is dated 2024-01-01; charges are a
    settings-free part of the paper broker, so the bench swaps the schedule in its own traders.
    """
    from dataclasses import replace

    from alphapanda.brokers.factory import TraderFactory
    from alphapanda.domain.charges import parse_charge_schedule
    from alphapanda.runtime.bootstrap import Core
    from alphapanda.topics import Function

    by_token = {i.instrument_token: i for i in core.instruments}
    traders = TraderFactory(core.settings, by_token, charges=parse_charge_schedule(NO_CHARGES, "bench"))
    stages = dict(core.stages)
    for function in (Function.TRADING_ENGINE, Function.ORDER_MATCHER):
        stages[function] = replace(stages[function], traders=traders)
    return Core(core.settings, core.instruments, core.strategies, stages)


def _tick_rows(w: Workload) -> list[Any]:
    """The workload as the backtest's tick rows: what a tick file is read into (validated rows,
    no model or id per tick). Tick ids are derived as `feed.TickStamper` would give them."""
    from alphapanda.runtime.tickfiles import TickRow

    prices: dict[int, Decimal] = {}

    def price(cents: int) -> Decimal:
        value = prices.get(cents)
        if value is None:
            value = prices[cents] = Decimal(cents) * CENT
        return value

    symbols = [f"SYM{k:03d}" for k in range(w.instruments)]
    rows = []
    for row, mids in enumerate(w.mids_cents.tolist()):
        at = START + timedelta(seconds=row)
        for k, cents in enumerate(mids):
            mid = price(cents)
            rows.append(
                TickRow(
                    k + 1,
                    symbols[k],
                    "NSE",
                    "equity",
                    at,
                    mid,
                    price(cents - 1),
                    price(cents + 1),
                    1_000_000,
                    1_000_000,
                    0,
                    None,
                    None,
                    row,
                )
            )
    return rows


def _core(instruments: int) -> Any:
    from alphapanda.runtime.bootstrap import build_core

    with tempfile.TemporaryDirectory() as tmp:
        return _no_charges(build_core(_settings(Path(tmp), instruments)))


def run_ours(w: Workload, profile: Path | None = None) -> tuple[float, float, int]:
    """(engine run seconds, whole seconds incl. building the tick rows, fills)."""
    from alphapanda.runtime.backtest import Backtest, BacktestStateStore

    whole = time.perf_counter()
    rows = _tick_rows(w)
    engine = Backtest(_core(w.instruments), BacktestStateStore())
    started = time.perf_counter()
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        result = prof.runcall(engine.run, rows)
        prof.dump_stats(profile)
    else:
        result = engine.run(rows)
    done = time.perf_counter()
    return done - started, done - whole, result.report.trades


def run_file(path: Path, instruments: int) -> dict[str, float]:
    """Backtest the workload from a tick file, in this process: read seconds, engine run seconds
    and fills. `run_ours_from_file` runs it in a fresh interpreter to time the whole process."""
    from alphapanda.runtime.backtest import Backtest, BacktestStateStore
    from alphapanda.runtime.tickfiles import is_parquet, read_tick_rows

    core = _core(instruments)
    if is_parquet(path):
        import pyarrow.parquet  # noqa: F401  (its import, ~1 s, is not reading: the whole time has it)
    started = time.perf_counter()
    rows = list(read_tick_rows(path))
    read = time.perf_counter()
    result = Backtest(core, BacktestStateStore()).run(rows)
    done = time.perf_counter()
    return {"read_s": read - started, "run_s": done - read, "fills": result.report.trades}


def run_ours_from_file(path: Path, instruments: int) -> tuple[float, float, float, int]:
    """(engine run seconds, read seconds, whole process seconds, fills) for a fresh `python`
    process that imports alphapanda, reads `path` and backtests it."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from alphapanda.bench.backtest import run_file\n"
        "print(json.dumps(run_file(Path(sys.argv[1]), int(sys.argv[2]))))\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(instruments)], capture_output=True, text=True, check=True
    )
    whole = time.perf_counter() - started
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures["run_s"], figures["read_s"], whole, int(figures["fills"])


def run_plain(w: Workload) -> tuple[float, int]:
    """The four stages as plain functions passing dicts: the bound for a Python engine."""
    ticks = [
        {"k": k, "bid": (c - 1) / 100, "ask": (c + 1) / 100}
        for row in w.mids_cents.tolist()
        for k, c in enumerate(row)
    ]
    started = time.perf_counter()
    ema: dict[int, list[float]] = {}
    books: dict[int, list[float]] = {}
    orders = 0

    def strategy(t: dict[str, Any]) -> dict[str, Any] | None:
        p = (t["bid"] + t["ask"]) / 2
        s = ema.get(t["k"])
        if s is None:
            ema[t["k"]] = [p, p, 1, 0]
            return None
        s[0] += 2 / 11 * (p - s[0])
        s[1] += 2 / 21 * (p - s[1])
        s[2] += 1
        if s[2] >= 20 and s[0] != s[1]:
            target = 100 if s[0] > s[1] else -100
            if target != s[3]:
                delta, s[3] = target - s[3], target
                return {"k": t["k"], "qty": delta}
        return None

    def risk(sig: dict[str, Any]) -> dict[str, Any]:
        return sig if abs(sig["qty"]) <= 10**9 else {}

    def engine(sig: dict[str, Any], t: dict[str, Any]) -> dict[str, Any]:
        return {"k": sig["k"], "qty": sig["qty"], "price": t["ask"] if sig["qty"] > 0 else t["bid"]}

    def portfolio(fill: dict[str, Any]) -> None:
        b = books.setdefault(fill["k"], [0, 0.0])
        b[0] += fill["qty"]
        b[1] -= fill["qty"] * fill["price"]

    for t in ticks:
        sig = strategy(t)
        if sig is not None:
            ok = risk(sig)
            if ok:
                portfolio(engine(ok, t))
                orders += 1
    return time.perf_counter() - started, orders


def run_nautilus(w: Workload) -> tuple[float, float, int] | None:
    """(engine run seconds, whole seconds incl. data building, orders), or None if not installed."""
    try:
        from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
        from nautilus_trader.config import LoggingConfig, StrategyConfig
        from nautilus_trader.model.currencies import USD
        from nautilus_trader.model.data import QuoteTick
        from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
        from nautilus_trader.model.identifiers import Venue
        from nautilus_trader.model.objects import Money, Price, Quantity
        from nautilus_trader.test_kit.providers import TestInstrumentProvider
        from nautilus_trader.trading.strategy import Strategy
    except ImportError:
        return None

    class EmaConfig(StrategyConfig, frozen=True):  # type: ignore[misc,call-arg]
        instrument_ids: tuple[Any, ...] = ()

    class Ema(Strategy):  # type: ignore[misc]
        def __init__(self, config: EmaConfig) -> None:
            super().__init__(config)
            self.emas: dict[Any, list[float]] = {}
            self.orders_sent = 0
            self.q100 = Quantity.from_int(100)
            self.q200 = Quantity.from_int(200)

        def on_start(self) -> None:
            for iid in self.config.instrument_ids:
                self.subscribe_quote_ticks(iid)

        def on_quote_tick(self, tick: Any) -> None:
            p = (tick.bid_price.as_double() + tick.ask_price.as_double()) / 2
            iid = tick.instrument_id
            s = self.emas.get(iid)
            if s is None:
                self.emas[iid] = [p, p, 1, 0]
                return
            s[0] += 2 / 11 * (p - s[0])
            s[1] += 2 / 21 * (p - s[1])
            s[2] += 1
            if s[2] >= 20 and s[0] != s[1]:
                target = 100 if s[0] > s[1] else -100
                if target != s[3]:
                    delta, s[3] = target - s[3], target
                    side = OrderSide.BUY if delta > 0 else OrderSide.SELL
                    qty = self.q100 if abs(delta) == 100 else self.q200
                    self.submit_order(self.order_factory.market(iid, side, qty))
                    self.orders_sent += 1

    whole = time.perf_counter()
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    venue = Venue("SIM")
    engine.add_venue(
        venue=venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USD,
        starting_balances=[Money(10**9, USD)],
    )
    insts = [TestInstrumentProvider.equity(symbol=f"S{k:03d}", venue="SIM") for k in range(w.instruments)]
    for inst in insts:
        engine.add_instrument(inst)
    base_ns = int(START.timestamp()) * 1_000_000_000
    size = Quantity.from_int(1_000_000)
    data = []
    for row, prices in enumerate(w.mids_cents.tolist()):
        ts = base_ns + row * 1_000_000_000
        for k, cents in enumerate(prices):
            data.append(
                QuoteTick(
                    insts[k].id,
                    Price((cents - 1) / 100, 2),
                    Price((cents + 1) / 100, 2),
                    size,
                    size,
                    ts,
                    ts,
                )
            )
    engine.add_data(data)
    strategy = Ema(EmaConfig(instrument_ids=tuple(i.id for i in insts)))
    engine.add_strategy(strategy)
    started = time.perf_counter()
    engine.run()
    ran = time.perf_counter() - started
    fills = len(engine.trader.generate_order_fills_report())
    engine.dispose()
    return ran, time.perf_counter() - whole, min(fills, strategy.orders_sent)


def _median(runs: list[float]) -> float:
    return statistics.median(runs)


def bench(
    ticks: int,
    instruments_list: list[int],
    runs: int,
    ours_ticks: int | None,
    profile: Path | None,
    out: Callable[[str], None] = print,
) -> None:
    for k in instruments_list:
        w = generate(ticks, k)
        want = expected_orders(w)
        out(f"workload: {ticks:,} ticks, {k} instrument(s), {want:,} orders expected")
        plain = [run_plain(w) for _ in range(runs)]
        plain_rate = ticks / _median([s for s, _ in plain])
        out(f"  plain Python (4 stages, dicts): {plain_rate:>12,.0f} ticks/s  orders={plain[0][1]:,}")
        ow = w if ours_ticks is None or ours_ticks >= ticks else generate(ours_ticks - ours_ticks % k, k)
        ours = [run_ours(ow) for _ in range(runs)]
        ours_rate = ow.ticks / _median([r[0] for r in ours])
        ours_whole = ow.ticks / _median([r[1] for r in ours])
        note = "" if ow is w else f" (on the first {ow.ticks:,} ticks of the same generator)"
        out(
            f"  alphapanda backtest:            {ours_rate:>12,.0f} ticks/s engine run, "
            f"{ours_whole:,.0f} whole (incl. building tick rows)  fills={ours[0][2]:,} "
            f"expected={expected_orders(ow):,}{note}  "
            f"= {ours_rate / plain_rate:.2%} of plain Python"
        )
        for suffix in (".csv", ".parquet"):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"ticks{suffix}"
                try:
                    write_tick_file(ow, path)
                except ImportError:
                    out(
                        f"  from a {suffix[1:]} tick file: pyarrow is not installed "
                        "(pip install 'alphapanda[parquet]')"
                    )
                    continue
                mb = path.stat().st_size / 1e6
                from_file = [run_ours_from_file(path, k) for _ in range(runs)]
            run_rate = ow.ticks / _median([r[0] for r in from_file])
            read_rate = ow.ticks / _median([r[1] for r in from_file])
            whole_rate = ow.ticks / _median([r[2] for r in from_file])
            out(
                f"  alphapanda from a {suffix[1:]:<7} file:   {run_rate:>12,.0f} ticks/s engine run, "
                f"{whole_rate:,.0f} whole process (python start, read {read_rate:,.0f} ticks/s, run; "
                f"{mb:,.0f} MB)  fills={from_file[0][3]:,}"
            )
        naut = [r for r in (run_nautilus(w) for _ in range(runs)) if r is not None]
        if not naut:
            out("  NautilusTrader: not installed (pip install 'alphapanda[bench]')")
            continue
        n_rate = ticks / _median([r[0] for r in naut])
        n_whole = ticks / _median([r[1] for r in naut])
        out(
            f"  NautilusTrader BacktestEngine:  {n_rate:>12,.0f} ticks/s engine run, {n_whole:,.0f} whole "
            f"(incl. building QuoteTicks)  fills={naut[0][2]:,}"
        )
        out(f"  ratio alphapanda / Nautilus: {ours_rate / n_rate:.3f}x  (target >= 10x)")
    if profile is not None:
        w = generate(min(ticks, 50_000), instruments_list[-1])
        run_ours(w, profile)
        import pstats

        out(
            f"profile of alphapanda backtest on {w.ticks:,} ticks ({w.instruments} instruments), "
            "top 15 by own time:"
        )
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(15)

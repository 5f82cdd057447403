"""The reference backtest workload (docs: /work/shared/reference/bench-workload.md), generated exactly.

N ticks round-robin over K instruments; tick i is instrument i mod K at 2024-01-01T00:00:00Z
+ floor(i / K) s; per instrument a geometric random walk of the mid, log steps N(0, 5 bp) drawn
as one (N/K, K) array from NumPy's default_rng(42), starting at 100.00, rounded to 0.01;
bid/ask = mid -/+ 0.01, size 1,000,000. The first row of steps moves the price off 100.00 for
tick K.. onwards: row 0 is the starting price itself.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2024, 1, 1, tzinfo=UTC)
SEED = 42
SIGMA = 0.0005
SIZE = 1_000_000


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise SystemExit("the benchmark workload needs numpy: pip install 'alphapanda[bench]'") from None
    return numpy


@dataclass(frozen=True)
class Workload:
    ticks: int
    instruments: int
    mids_cents: Any
    """int64 array (N/K, K): each row one second, each column one instrument, mid in paise/cents."""

    def rows(self) -> int:
        return int(self.mids_cents.shape[0])


def generate(ticks: int, instruments: int) -> Workload:
    np = _numpy()
    if ticks % instruments:
        raise ValueError("ticks must be a multiple of instruments")
    rng = np.random.default_rng(SEED)
    steps = rng.normal(0.0, SIGMA, size=(ticks // instruments, instruments))
    steps[0, :] = 0.0
    mids = 100.0 * np.exp(np.cumsum(steps, axis=0))
    return Workload(ticks, instruments, np.rint(mids * 100).astype(np.int64))


def expected_orders(workload: Workload, fast: int = 10, slow: int = 20) -> int:
    """The order count the workload's strategy must produce (plain float EMA, as both engines do)."""
    count = 0
    af, aslow = 2.0 / (fast + 1), 2.0 / (slow + 1)
    for k in range(workload.instruments):
        col = workload.mids_cents[:, k].tolist()
        f = s = col[0] / 100
        target, n = 0, 1
        for cents in col[1:]:
            p = cents / 100
            f += af * (p - f)
            s += aslow * (p - s)
            n += 1
            if n >= slow and f != s:
                t = 100 if f > s else -100
                if t != target:
                    count += 1
                    target = t
    return count


def write_tick_file(workload: Workload, path: Path) -> int:
    """Write the workload as a tick file (CSV, or Parquet by suffix) in `feed.TICK_CSV_COLUMNS`.

    Written straight from the arrays (text as the CSV writer would give it), not through a
    million `MarketTick` models: the file is the bench's input, not what it measures.
    """
    from alphapanda.feed import TICK_CSV_COLUMNS
    from alphapanda.runtime.tickfiles import is_parquet

    k = workload.instruments
    symbols = [f"SYM{j:03d}" for j in range(k)]
    columns: dict[str, list[str]] = {name: [] for name in TICK_CSV_COLUMNS}
    size = str(SIZE)
    for row, prices in enumerate(workload.mids_cents.tolist()):
        at = (START + timedelta(seconds=row)).isoformat()
        for j, cents in enumerate(prices):
            columns["instrument_token"].append(str(j + 1))
            columns["tradingsymbol"].append(symbols[j])
            columns["exchange"].append("NSE")
            columns["asset_class"].append("equity")
            columns["exchange_timestamp"].append(at)
            columns["last_price"].append(_rupees(cents))
            columns["bid"].append(_rupees(cents - 1))
            columns["ask"].append(_rupees(cents + 1))
            columns["bid_quantity"].append(size)
            columns["ask_quantity"].append(size)
            columns["volume"].append("0")
            columns["depth_buy"].append("")
            columns["depth_sell"].append("")
    if is_parquet(path):
        import pyarrow
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.table(columns), path)
    else:
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(TICK_CSV_COLUMNS)
            writer.writerows(zip(*(columns[name] for name in TICK_CSV_COLUMNS), strict=True))
    return workload.ticks


def _rupees(cents: int) -> str:
    """Paise as the rupee text `str(Decimal)` gives for a 2-decimal price (e.g. 10001 -> 100.01)."""
    return f"{cents // 100}.{cents % 100:02d}"

"""Tick ids and CSV tick files: a simulator run and a replay of its CSV give identical events."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path

import pytest

from alphapanda.domain.instruments import Instrument
from alphapanda.domain.simulator import MarketSimulator, SimulatorParams
from alphapanda.events import IST, MarketTick
from alphapanda.feed import TickFileError, TickStamper, read_ticks_csv, write_ticks_csv

START = datetime(2025, 11, 24, 9, 15, tzinfo=IST)
INSTRUMENTS = [
    Instrument(
        738561, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", Decimal("0.05"), 1, Decimal("1480")
    ),
    Instrument(
        13238786, "NIFTY25DECFUT", "NIFTY", "NFO", "NFO-FUT", "FUT", Decimal("0.05"), 75, Decimal("26000")
    ),
]


def _ticks(n: int, **params: object) -> list[MarketTick]:
    sim = MarketSimulator(INSTRUMENTS, seed=11, start=START, params=SimulatorParams(**params))  # type: ignore[arg-type]
    return list(islice(sim, n))


def test_stamp_when_same_stream_stamped_twice_then_same_ids() -> None:
    ticks = _ticks(20)

    assert [e.id for e in map(TickStamper().stamp, ticks)] == [e.id for e in map(TickStamper().stamp, ticks)]


def test_stamp_when_same_tick_seen_twice_then_second_gets_a_new_id() -> None:
    stamper = TickStamper()
    tick = _ticks(1)[0]

    assert stamper.stamp(tick).id != stamper.stamp(tick).id


def test_stamp_when_namespaces_differ_then_ids_differ() -> None:
    tick = _ticks(1)[0]

    assert TickStamper("run-a").stamp(tick).id != TickStamper("run-b").stamp(tick).id


def test_stamp_when_timestamps_differ_then_ids_differ_at_the_same_position() -> None:
    tick = _ticks(1)[0]
    later = tick.model_copy(update={"exchange_timestamp": tick.exchange_timestamp + timedelta(seconds=1)})

    assert TickStamper().stamp(tick).id != TickStamper().stamp(later).id


def test_stamp_when_instruments_interleave_then_sequence_is_per_instrument() -> None:
    reliance, nifty, *_ = _ticks(4)
    interleaved = TickStamper()
    interleaved.stamp(nifty)

    # RELIANCE is still at position 0 of its own stream, whatever came before on other instruments.
    assert interleaved.stamp(reliance).id == TickStamper().stamp(reliance).id


def test_read_ticks_csv_when_simulator_stream_written_then_replay_gives_identical_events(
    tmp_path: Path,
) -> None:
    ticks = _ticks(60, seconds_per_tick=0.25)
    path = tmp_path / "ticks.csv"

    live, replay = TickStamper(), TickStamper()

    written = write_ticks_csv(path, ticks)
    replayed = [replay.stamp(t) for t in read_ticks_csv(path)]

    assert written == 60
    assert replayed == [live.stamp(t) for t in ticks]
    assert len({e.id for e in replayed}) == 60


def test_read_ticks_csv_when_ticks_have_no_depth_then_replay_keeps_it_absent(tmp_path: Path) -> None:
    ticks = _ticks(4, with_depth=False)
    path = tmp_path / "ticks.csv"
    write_ticks_csv(path, ticks)

    assert list(read_ticks_csv(path)) == ticks


def test_read_ticks_csv_when_prices_read_back_then_decimals_keep_their_text(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    write_ticks_csv(path, _ticks(1))

    (tick,) = read_ticks_csv(path)

    assert tick.bid.as_tuple().exponent == -2


def test_read_ticks_csv_when_a_column_is_missing_then_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("instrument_token,tradingsymbol\n1,X\n")

    with pytest.raises(TickFileError, match=r"missing columns .*last_price"):
        list(read_ticks_csv(path))


def test_read_ticks_csv_when_a_row_is_bad_then_raises_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    write_ticks_csv(path, _ticks(3))
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    cells[4] = "not-a-time"  # exchange_timestamp of the third tick, on line 4 of the file
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(TickFileError, match=r"ticks\.csv line 4: .*not-a-time"):
        list(read_ticks_csv(path))

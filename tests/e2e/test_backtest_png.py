"""`alphapanda backtest --plot OUT.png`: a real backtest's equity and drawdown as a PNG."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from alphapanda.domain.report import EquityTracker, build_report, drawdown_series
from alphapanda.runtime.plots import HEIGHT_PX, WIDTH_PX, PlotError, write_png

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DAY = ROOT / "shared/alphapanda/data/sample_day_nse.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EQUITY_RGB = (0x1F, 0x77, 0xB4)  # the colours plots.py draws the two lines in
DRAWDOWN_RGB = (0xD6, 0x27, 0x28)


def _ihdr(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, after checking the signature and its CRC."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    body, crc = data[16:29], struct.unpack(">I", data[29:33])[0]
    assert zlib.crc32(kind + body) == crc, "corrupt IHDR chunk"
    width, height = struct.unpack(">II", body[:8])
    return width, height


def _mask(rgba: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Where the pixels are `rgb` (within a rounding step: the line's core, not its antialiased edge)."""
    target = np.array(rgb, dtype=float) / 255
    return np.asarray(np.abs(rgba[:, :, :3] - target).max(axis=2) < 2 / 255)


def _alphapanda() -> str:
    exe = shutil.which("alphapanda")
    if exe is None:
        pytest.skip("the alphapanda command is not installed")
    return exe


def test_backtest_when_plot_is_a_png_then_a_png_of_the_equity_and_drawdown_is_written(tmp_path: Path) -> None:
    plot, report_json, html = tmp_path / "equity.png", tmp_path / "report.json", tmp_path / "equity.html"
    done = subprocess.run(
        [
            _alphapanda(),
            "backtest",
            "--ticks",
            str(SAMPLE_DAY),
            "--no-progress",
            "--json",
            str(report_json),
            "--plot",
            str(plot),
            "--plot",
            str(html),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"plot: {plot}\nplot: {html}" in done.stdout
    # The HTML version of the same plot, beside the PNG, from the same run.
    assert "<svg" in html.read_text()
    report = json.loads(report_json.read_text())
    assert len(report["equity_curve"]) > 100 and Decimal(report["max_drawdown"]) > 0

    assert _ihdr(plot) == (WIDTH_PX, HEIGHT_PX)
    rgba = image.imread(plot)
    assert rgba.shape[:2] == (HEIGHT_PX, WIDTH_PX)
    # Both curves were drawn: a line of hundreds of samples covers many pixels of its colour,
    # and the equity line sits above the drawdown line (top and bottom panels).
    equity_rows = np.nonzero(_mask(rgba, EQUITY_RGB))[0]
    drawdown_rows = np.nonzero(_mask(rgba, DRAWDOWN_RGB))[0]
    assert len(equity_rows) > 300 and len(drawdown_rows) > 300
    assert equity_rows.mean() < drawdown_rows.mean()


def test_write_png_when_the_report_has_no_equity_samples_then_a_valid_png_says_there_is_nothing_to_plot(
    tmp_path: Path,
) -> None:
    empty = build_report(EquityTracker(starting_cash=Decimal(1_000_000)), [], ticks=0, events={})
    assert empty.curve == ()
    plot = tmp_path / "empty.png"
    write_png(empty, plot)
    assert _ihdr(plot) == (WIDTH_PX, HEIGHT_PX)
    rgba = image.imread(plot)
    assert not _mask(rgba, EQUITY_RGB).any() and not _mask(rgba, DRAWDOWN_RGB).any()
    # ... but not a blank image: the message is there.
    assert (rgba[:, :, :3] < 0.5).any()


def test_write_png_when_the_directory_does_not_exist_then_plot_error_names_the_file(tmp_path: Path) -> None:
    empty = build_report(EquityTracker(starting_cash=Decimal(1_000_000)), [], ticks=0, events={})
    target = tmp_path / "missing" / "equity.png"
    with pytest.raises(PlotError, match="cannot write"):
        write_png(empty, target)


def test_drawdown_series_when_equity_rises_falls_and_recovers_then_falls_are_from_the_running_peak() -> None:
    assert drawdown_series([100.0, 110.0, 99.0, 105.0, 120.0, 90.0]) == [0.0, 0.0, -11.0, -5.0, 0.0, -30.0]
    assert drawdown_series([]) == []
    # From the starting cash, as the report's max drawdown: a first sample already below it is a fall.
    assert drawdown_series([9985.0, 10005.0, 9990.0], 10000.0) == [-15.0, 0.0, -15.0]


def test_cli_when_started_then_matplotlib_is_not_imported() -> None:
    # Start-up stays fast: matplotlib loads only when a PNG is written.
    code = (
        "import sys\n"
        "import alphapanda.cli, alphapanda.cli_backtest, alphapanda.runtime.plots\n"
        "sys.exit(1 if 'matplotlib' in sys.modules else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0

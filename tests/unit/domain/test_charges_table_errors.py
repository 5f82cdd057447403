"""A charges table with a mistake YAML itself lets through or words badly: each is one clear line
naming the file and where in it the mistake is, never a bare exception or a silently wrong rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphapanda.domain.charges import ChargeScheduleError, load_charge_schedule

_TABLE = """\
schema_version: 1
entries:
  - broker: zerodha
    segment: equity_intraday
    exchange: NSE
    effective_from: 2021-01-01
    source: "test"
    brokerage:    {kind: percentage, rate_pct: 0.03, cap: 20, rounding: paisa}
    stt:          {rate_pct: 0.025, side: sell, rounding: rupee}
    exchange_txn: {rate_pct: 0.00345, rounding: paisa}
    sebi:         {per_crore: 10, rounding: paisa}
    gst:          {rate_pct: 18, rounding: paisa}
    stamp_duty:   {rate_pct: 0.003, side: buy, rounding: paisa}
"""


def _load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ChargeScheduleError) as caught:
        load_charge_schedule(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert "bad.yaml" in message
    return message


def test_load_schedule_when_the_table_parses_then_no_error(tmp_path: Path) -> None:
    # The table the cases below break is itself valid.
    path = tmp_path / "good.yaml"
    path.write_text(_TABLE)
    assert load_charge_schedule(path).entries[0].sebi.per_crore == 10


def test_load_schedule_when_a_date_is_impossible_then_one_line_error_with_its_line(tmp_path: Path) -> None:
    # Month 13: PyYAML's date constructor raised a bare ValueError("month must be in 1..12"),
    # naming neither the file nor the line.
    message = _load_error(tmp_path, _TABLE.replace("2021-01-01", "2021-13-01"))

    assert "line 6" in message
    assert "2021-13-01" in message


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf", "1:30.5"])
def test_load_schedule_when_a_rate_is_no_finite_decimal_then_the_error_names_it(
    tmp_path: Path, value: str
) -> None:
    # These are YAML floats that no Decimal can be made of: the error read
    # "not valid YAML: [<class 'decimal.ConversionSyntax'>]".
    message = _load_error(tmp_path, _TABLE.replace("rate_pct: 0.00345", f"rate_pct: {value}"))

    assert "line 10" in message
    assert value in message
    assert "ConversionSyntax" not in message


def test_load_schedule_when_yaml_syntax_is_broken_then_one_line_error_with_its_line(tmp_path: Path) -> None:
    # A flow mapping left open on line 10: PyYAML's message spans eight lines.
    message = _load_error(tmp_path, _TABLE.replace("0.00345, rounding: paisa}", "0.00345, rounding: paisa"))

    assert "not valid YAML" in message
    assert "line 10" in message or "line 11" in message


def test_load_schedule_when_a_key_repeats_in_an_entry_then_error_instead_of_the_last_one_winning(
    tmp_path: Path,
) -> None:
    # A second `sebi:` line (a pasted new rate, the old one not deleted) silently replaced the
    # first: the entry was charged Rs 5/crore with nothing said.
    sebi = "    sebi:         {per_crore: 10, rounding: paisa}\n"
    repeated = _TABLE.replace(sebi, sebi + sebi.replace("10", "5"))
    message = _load_error(tmp_path, repeated)

    assert "sebi" in message
    assert "line 12" in message

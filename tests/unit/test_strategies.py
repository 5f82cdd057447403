"""The strategies file: the shipped one loads, and every mistake names the strategy it is in."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from alphapanda.domain.instruments import Instrument, load_instruments
from alphapanda.domain.strategy import EmaCrossover, StrategyConfigError
from alphapanda.strategies import load_strategies, parse_strategies

INSTRUMENTS = [
    Instrument(
        738561, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", Decimal("0.05"), 1, Decimal("1480")
    ),
    Instrument(408065, "INFY", "INFOSYS", "NSE", "NSE", "EQ", Decimal("0.05"), 1, Decimal("1520")),
]

VALID = """
strategies:
  - name: ema_one
    kind: ema_crossover
    instruments: [RELIANCE]
    brokers: [paper, zerodha]
    params: {fast: 5, slow: 20, quantity: 10}
"""


def _parse(text: str) -> None:
    parse_strategies(text, INSTRUMENTS, "my.yaml")


def _entry(name: str = "ema_one", **fields: str) -> str:
    values = {
        "kind": "ema_crossover",
        "instruments": "[RELIANCE]",
        "brokers": "[paper]",
        "params": "{fast: 5, slow: 20, quantity: 10}",
    } | fields
    body = "".join(f"    {k}: {v}\n" for k, v in values.items())
    return f"  - name: {name}\n{body}"


def test_load_strategies_when_shipped_file_then_both_strategies_load_against_shipped_instruments() -> None:
    instruments = load_instruments()
    tokens = {i.tradingsymbol: i.instrument_token for i in instruments}

    specs = {s.name: s for s in load_strategies(None, instruments)}

    assert sorted(specs) == ["ema_fast", "ema_slow"]
    assert specs["ema_fast"].brokers == ("paper", "zerodha")
    assert specs["ema_fast"].strategy == EmaCrossover(fast=5, slow=20, quantity=10)
    assert len(specs["ema_fast"].tokens) == 10
    assert tokens["RELIANCE"] in specs["ema_fast"].tokens
    assert specs["ema_slow"].tokens == frozenset(tokens.values())
    assert specs["ema_slow"].brokers == ("paper",)


def test_load_strategies_when_path_given_then_reads_that_file(tmp_path: Path) -> None:
    path = tmp_path / "strategies.yaml"
    path.write_text(VALID)

    (spec,) = load_strategies(path, INSTRUMENTS)

    assert (spec.name, spec.tokens, spec.brokers) == ("ema_one", frozenset({738561}), ("paper", "zerodha"))


def test_parse_strategies_when_instruments_all_then_every_token_is_traded() -> None:
    (spec,) = parse_strategies("strategies:\n" + _entry(instruments="all"), INSTRUMENTS, "my.yaml")

    assert spec.tokens == frozenset({738561, 408065})


def test_parse_strategies_when_instrument_unknown_then_error_names_strategy_and_symbols() -> None:
    with pytest.raises(
        StrategyConfigError, match=re.escape("my.yaml: strategy 'ema_one': unknown instruments TATA, XYZ")
    ):
        _parse("strategies:\n" + _entry(instruments="[RELIANCE, TATA, XYZ]"))


def test_parse_strategies_when_kind_unknown_then_error_names_strategy_and_kind() -> None:
    with pytest.raises(StrategyConfigError, match="strategy 'ema_one': unknown strategy kind 'rsi'"):
        _parse("strategies:\n" + _entry(kind="rsi"))


def test_parse_strategies_when_name_repeated_then_error_names_the_duplicate() -> None:
    with pytest.raises(StrategyConfigError, match=re.escape("my.yaml: strategy 'twice' is defined twice")):
        _parse("strategies:\n" + _entry("once") + _entry("twice") + _entry("twice"))


def test_parse_strategies_when_params_invalid_then_error_names_strategy() -> None:
    with pytest.raises(StrategyConfigError, match="strategy 'ema_one': ema_crossover needs 1 <= fast < slow"):
        _parse("strategies:\n" + _entry(params="{fast: 20, slow: 5, quantity: 10}"))


def test_parse_strategies_when_param_unknown_then_error_names_strategy() -> None:
    with pytest.raises(StrategyConfigError, match="strategy 'ema_one': ema_crossover params are wrong"):
        _parse("strategies:\n" + _entry(params="{fast: 5, slow: 20, quantity: 10, window: 3}"))


def test_parse_strategies_when_broker_name_invalid_then_error_names_strategy() -> None:
    with pytest.raises(StrategyConfigError, match="strategy 'ema_one': broker name 'Paper' is invalid"):
        _parse("strategies:\n" + _entry(brokers="[Paper]"))


def test_parse_strategies_when_field_missing_then_error_locates_it() -> None:
    text = "strategies:\n  - name: ema_one\n    kind: ema_crossover\n    instruments: all\n"

    with pytest.raises(
        StrategyConfigError, match=re.escape("my.yaml: strategies__0__brokers is invalid: field required")
    ):
        _parse(text)


def test_parse_strategies_when_name_has_capitals_then_error_locates_it() -> None:
    with pytest.raises(StrategyConfigError, match="strategies__0__name"):
        _parse("strategies:\n" + _entry("EmaOne"))


def test_parse_strategies_when_not_yaml_then_says_so() -> None:
    with pytest.raises(StrategyConfigError, match=r"my\.yaml line 2, column 1: not valid YAML"):
        _parse("strategies: [unclosed\n")


def test_parse_strategies_when_document_empty_then_raises_config_error() -> None:
    with pytest.raises(StrategyConfigError, match=re.escape("my.yaml")):
        _parse("")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"strategies: [\n", " line 2, column 1: not valid YAML: expected the node content"),
        (b"hello\n", ": found a str, not a `strategies:` list at the top"),
        (b"", ": found nothing, not a `strategies:` list at the top"),
        (b"{}\n", ": found an empty mapping, not a `strategies:` list"),
        (b"strategy:\n  - name: x\n", ": found keys strategy, not a `strategies:` list at the top"),
        (b"\xff\xfe\x00s", ": not a text file: give a strategies YAML file"),
    ],
    ids=["yaml_error", "a_string", "empty", "empty_mapping", "misspelt_key", "binary"],
)
def test_load_strategies_when_the_file_is_no_strategies_document_then_one_line_says_why(
    tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / "my.yaml"
    path.write_bytes(content)
    with pytest.raises(StrategyConfigError) as raised:
        load_strategies(path, load_instruments())
    message = str(raised.value)
    assert message.startswith(f"{path}{says}")
    assert "\n" not in message

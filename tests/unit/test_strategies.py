"""The strategies file: the shipped one loads, and every mistake names the strategy it is in."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from alphapanda.domain.instruments import Instrument, load_instruments
from alphapanda.domain.strategy import EmaCrossover, StrategyConfigError
from alphapanda.events import Product
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
        StrategyConfigError, match=re.escape("my.yaml: strategy 'ema_one' (entry 1): brokers is missing")
    ):
        _parse(text)


def test_parse_strategies_when_name_has_capitals_then_error_locates_it() -> None:
    with pytest.raises(
        StrategyConfigError, match=re.escape("my.yaml: entry 1: name is invalid: string should")
    ):
        _parse("strategies:\n" + _entry("EmaOne"))


def test_parse_strategies_when_setting_unknown_then_error_names_it_and_the_known_ones() -> None:
    with pytest.raises(
        StrategyConfigError,
        match=re.escape(
            "my.yaml: strategy 'ema_one' (entry 1): colour is not a setting (known: name, kind, "
            "instruments, brokers, params, product, risk)"
        ),
    ):
        _parse("strategies:\n" + _entry() + "    colour: red\n")
    with pytest.raises(
        StrategyConfigError, match=re.escape("risk.max_lots is not a setting (known: capital_")
    ):
        _parse("strategies:\n" + _entry() + "    risk: {max_lots: 3}\n")


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


FUTURE = Instrument(
    12345, "NIFTY26JANFUT", "NIFTY", "NFO", "NFO-FUT", "FUT", Decimal("0.05"), 75, Decimal("23500")
)


def test_parse_strategies_when_no_product_then_mis_and_signals_say_so() -> None:
    (spec,) = parse_strategies(VALID, INSTRUMENTS, "my.yaml")

    assert spec.product is Product.MIS


def test_parse_strategies_when_cnc_and_long_only_then_the_strategy_trades_delivery() -> None:
    text = "strategies:\n" + _entry(
        product="CNC", params="{fast: 5, slow: 20, quantity: 10, long_only: true}"
    )

    (spec,) = parse_strategies(text, INSTRUMENTS, "my.yaml")

    assert spec.product is Product.CNC
    assert spec.strategy == EmaCrossover(fast=5, slow=20, quantity=10, long_only=True)


def test_parse_strategies_when_cnc_strategy_would_sell_short_then_refused_with_the_fix() -> None:
    with pytest.raises(
        StrategyConfigError,
        match=r"strategy 'ema_one': a CNC \(delivery\) strategy cannot sell short .* params.long_only: true",
    ):
        _parse("strategies:\n" + _entry(product="CNC"))


@pytest.mark.parametrize(
    ("product", "instrument", "says"),
    [
        ("NRML", "RELIANCE", "product NRML cannot trade RELIANCE (an equity): use MIS or CNC"),
        (
            "CNC",
            "NIFTY26JANFUT",
            "product CNC cannot trade NIFTY26JANFUT (a futures or options contract): use MIS or NRML",
        ),
    ],
)
def test_parse_strategies_when_product_does_not_fit_an_instrument_then_error_names_both(
    product: str, instrument: str, says: str
) -> None:
    text = "strategies:\n" + _entry(
        product=product,
        instruments=f"[{instrument}]",
        params="{fast: 5, slow: 20, quantity: 10, long_only: true}",
    )
    with pytest.raises(StrategyConfigError, match=re.escape(f"strategy 'ema_one': {says}")):
        parse_strategies(text, [*INSTRUMENTS, FUTURE], "my.yaml")


def test_parse_strategies_when_product_unknown_then_error_locates_it() -> None:
    with pytest.raises(
        StrategyConfigError,
        match=re.escape(
            "strategy 'ema_one' (entry 1): product is invalid: input should be 'CNC', 'MIS' or 'NRML' "
            "(got 'DELIVERY')"
        ),
    ):
        _parse("strategies:\n" + _entry(product="DELIVERY"))


def test_readme_when_its_strategies_example_is_read_then_it_loads_as_documented() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("\n## Strategies\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]

    specs = {s.name: s for s in parse_strategies(example, load_instruments(), "README.md")}

    assert specs["ema_fast"].product is Product.MIS
    assert specs["ema_swing"].product is Product.CNC
    assert not specs["ema_swing"].strategy.sells_short

"""Settings: defaults, environment overrides, and one-line errors that name the setting."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from alphapanda.config import BrokerSettings, ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without the developer's ALPHAPANDA_* variables."""
    for name in list(os.environ):
        if name.upper().startswith("ALPHAPANDA_"):
            monkeypatch.delenv(name)


def _error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_load_settings_when_nothing_set_then_paper_only_with_embedded_servers() -> None:
    settings = load_settings()

    assert settings.brokers == ("paper",)
    assert settings.kafka.bootstrap_servers == ""
    assert settings.redis.url == ""
    assert settings.kafka.partitions == 3


def test_for_broker_when_broker_has_no_section_then_returns_defaults() -> None:
    assert load_settings().for_broker("zerodha") == BrokerSettings()


def test_load_settings_when_brokers_env_is_a_comma_list_then_it_is_split_and_trimmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHAPANDA_BROKERS", " paper , zerodha,")

    assert load_settings().brokers == ("paper", "zerodha")


def test_load_settings_when_nested_broker_env_set_then_only_that_broker_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHAPANDA_BROKERS", "paper,zerodha")
    monkeypatch.setenv("ALPHAPANDA_BROKER__PAPER__FILLS__SLIPPAGE_BPS", "5")
    monkeypatch.setenv("ALPHAPANDA_BROKER__PAPER__RISK__MAX_ORDER_VALUE", "250000")

    settings = load_settings()

    assert settings.for_broker("paper").fills.slippage_bps == Decimal("5")
    assert settings.for_broker("paper").risk.max_order_value == Decimal("250000")
    assert settings.for_broker("zerodha").fills.slippage_bps == Decimal("2")


def test_load_settings_when_kafka_env_set_then_nested_section_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("ALPHAPANDA_KAFKA__PARTITIONS", "12")

    settings = load_settings()

    assert (settings.kafka.bootstrap_servers, settings.kafka.partitions) == ("kafka:9092", 12)


def test_load_settings_when_override_given_then_it_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_BROKERS", "zerodha")

    assert load_settings(brokers=("paper",)).brokers == ("paper",)


def test_load_settings_when_partitions_out_of_range_then_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _error(monkeypatch, ALPHAPANDA_KAFKA__PARTITIONS="0")

    assert message.startswith("setting ALPHAPANDA_KAFKA__PARTITIONS is invalid:")
    assert "greater than or equal to 1" in message
    assert "(got '0')" in message


def test_load_settings_when_partitions_not_a_number_then_error_names_variable_and_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _error(monkeypatch, ALPHAPANDA_KAFKA__PARTITIONS="three")

    assert "ALPHAPANDA_KAFKA__PARTITIONS" in message
    assert "'three'" in message


def test_load_settings_when_two_settings_wrong_then_first_is_named_and_the_rest_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _error(monkeypatch, ALPHAPANDA_KAFKA__PARTITIONS="0", ALPHAPANDA_KAFKA__SESSION_TIMEOUT_MS="1")

    assert "ALPHAPANDA_KAFKA__" in message
    assert message.endswith("(and 1 more)")


def test_load_settings_when_broker_kind_unknown_then_error_names_brokers_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _error(monkeypatch, ALPHAPANDA_BROKERS="paper,kite")

    assert message.startswith("setting ALPHAPANDA_BROKERS is invalid:")
    assert "'kite' is of no known kind" in message


def test_load_settings_when_broker_name_not_dns_safe_then_error_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _error(monkeypatch, ALPHAPANDA_BROKERS="paper_replay")

    assert "ALPHAPANDA_BROKERS" in message
    assert "use lowercase letters, digits and dashes" in message


def test_load_settings_when_broker_named_twice_then_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "named twice" in _error(monkeypatch, ALPHAPANDA_BROKERS="paper,paper")


def test_load_settings_when_brokers_empty_then_raises_asking_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "at least one broker is required" in _error(monkeypatch, ALPHAPANDA_BROKERS=" , ")


def test_load_settings_when_broker_section_name_invalid_then_error_names_broker_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _error(monkeypatch, ALPHAPANDA_BROKER__PAPER_X__FILLS__SLIPPAGE_BPS="5")

    assert message.startswith("setting ALPHAPANDA_BROKER is invalid:")
    assert "'paper_x' is invalid" in message


def test_load_settings_when_slippage_negative_then_error_names_nested_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _error(monkeypatch, ALPHAPANDA_BROKER__PAPER__FILLS__SLIPPAGE_BPS="-1")

    assert message.startswith("setting ALPHAPANDA_BROKER__PAPER__FILLS__SLIPPAGE_BPS is invalid:")


def test_load_settings_when_strategies_file_missing_then_error_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    message = _error(monkeypatch, ALPHAPANDA_STRATEGIES_FILE=f"{tmp_path}/nope.yaml")

    assert message.startswith("setting ALPHAPANDA_STRATEGIES_FILE is invalid: no such file:")
    assert "nope.yaml" in message


def test_settings_when_loaded_then_frozen() -> None:
    settings = load_settings()

    with pytest.raises(ValueError, match="frozen"):
        settings.brokers = ("zerodha",)  # type: ignore[misc]

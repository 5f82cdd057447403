"""The topic table: names, dead-letter topics, bindings, consumer groups and broker names."""

from __future__ import annotations

import pytest

from alphapanda import topics
from alphapanda.topics import PIPELINE, Function, Scope

BROKERS = ["paper", "zerodha"]


def test_broker_topics_when_named_then_broker_is_the_first_segment() -> None:
    assert [make("paper") for make in topics.BROKER_TOPICS] == [
        "paper.signals.raw",
        "paper.signals.validated",
        "paper.signals.rejected",
        "paper.orders.submitted",
        "paper.orders.filled",
        "paper.orders.failed",
        "paper.orders.cancelled",
        "paper.orders.updated",
        "paper.pnl.snapshots",
        "paper.alerts",
    ]


def test_market_ticks_when_named_then_topic_is_per_asset_class_not_per_broker() -> None:
    assert topics.market_ticks("equity") == "market.equity.ticks"
    assert topics.market_ticks("fno") == "market.fno.ticks"


def test_dlq_when_named_then_topic_gets_dlq_suffix() -> None:
    assert topics.dlq("paper.signals.raw") == "paper.signals.raw.dlq"


def test_function_dns_name_when_read_then_underscores_become_dashes() -> None:
    assert Function.PORTFOLIO_MANAGER.dns_name == "portfolio-manager"


def test_pipeline_when_read_then_each_stage_consumes_the_previous_stages_output() -> None:
    wiring = {(s.function, s.scope, s.source) for s in PIPELINE}

    assert wiring == {
        (Function.STRATEGY_RUNNER, Scope.SHARED, "market.{asset_class}.ticks"),
        (Function.RISK_MANAGER, Scope.BROKER, "{broker}.signals.raw"),
        (Function.TRADING_ENGINE, Scope.BROKER, "{broker}.signals.validated"),
        (Function.ORDER_MATCHER, Scope.BROKER, "market.{asset_class}.ticks"),
        (Function.PORTFOLIO_MANAGER, Scope.BROKER, "{broker}.orders.filled"),
    }


def test_bindings_when_two_brokers_then_one_runner_three_stages_each_and_a_paper_matcher() -> None:
    bound = topics.bindings(BROKERS)

    assert len(bound) == 1 + 3 * 2 + 1
    assert sorted((b.function.value, b.broker or "") for b in bound) == [
        ("order_matcher", "paper"),
        ("portfolio_manager", "paper"),
        ("portfolio_manager", "zerodha"),
        ("risk_manager", "paper"),
        ("risk_manager", "zerodha"),
        ("strategy_runner", ""),
        ("trading_engine", "paper"),
        ("trading_engine", "zerodha"),
    ]


def test_bindings_when_shared_runner_bound_then_it_reads_every_asset_class() -> None:
    (runner,) = [b for b in topics.bindings(BROKERS) if b.function is Function.STRATEGY_RUNNER]

    assert runner.topics == ("market.equity.ticks", "market.fno.ticks")
    assert runner.consumer_group == "alphapanda-shared-strategy-runner"


def test_bindings_when_broker_stage_bound_then_group_and_topic_name_the_broker() -> None:
    bound = {(b.function, b.broker): b for b in topics.bindings(BROKERS)}

    risk = bound[(Function.RISK_MANAGER, "paper")]
    assert risk.consumer_group == "alphapanda-paper-risk-manager"
    assert risk.topics == ("paper.signals.raw",)
    assert bound[(Function.PORTFOLIO_MANAGER, "zerodha")].topics == ("zerodha.orders.filled",)


def test_bindings_when_paper_matcher_bound_then_it_reads_every_asset_class_in_its_own_group() -> None:
    (matcher,) = [b for b in topics.bindings(BROKERS) if b.function is Function.ORDER_MATCHER]

    assert matcher.broker == "paper"
    assert matcher.topics == ("market.equity.ticks", "market.fno.ticks")
    assert matcher.consumer_group == "alphapanda-paper-order-matcher"


def test_bindings_when_no_brokers_then_only_the_shared_runner_remains() -> None:
    assert [b.function for b in topics.bindings([])] == [Function.STRATEGY_RUNNER]


def test_subscription_topics_when_broker_scope_and_no_broker_then_raises() -> None:
    risk = next(s for s in PIPELINE if s.function is Function.RISK_MANAGER)

    with pytest.raises(ValueError, match="a broker is required"):
        risk.topics()


def test_all_topics_when_two_brokers_then_every_topic_and_its_dlq_once() -> None:
    every = topics.all_topics(BROKERS)

    base = [t for t in every if not t.endswith(".dlq")]
    assert len(base) == 2 + 10 * 2
    assert sorted(t for t in every if t.endswith(".dlq")) == sorted(t + ".dlq" for t in base)
    assert len(set(every)) == len(every) == 44


def test_all_topics_when_computed_then_every_bound_topic_is_included() -> None:
    every = set(topics.all_topics(BROKERS))

    for binding in topics.bindings(BROKERS):
        assert set(binding.topics) <= every
        assert {topics.dlq(t) for t in binding.topics} <= every


@pytest.mark.parametrize("name", ["paper", "zerodha", "paper-replay", "paper2", "zerodha-a1-b2"])
def test_validate_broker_name_when_name_is_dns_safe_then_returns_it(name: str) -> None:
    assert topics.validate_broker_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Paper", "paper_replay", "paper.x", "1paper", "-paper", "paper-", "paper--x", "pa per"]
)
def test_validate_broker_name_when_name_is_invalid_then_raises_naming_it(name: str) -> None:
    with pytest.raises(ValueError, match=f"broker name {name!r} is invalid"):
        topics.validate_broker_name(name)


@pytest.mark.parametrize(
    ("name", "kind"), [("paper", "paper"), ("paper-replay", "paper"), ("zerodha-2", "zerodha")]
)
def test_broker_kind_when_name_starts_with_known_kind_then_returns_kind(name: str, kind: str) -> None:
    assert topics.broker_kind(name) == kind


@pytest.mark.parametrize("name", ["kite", "paperx", "upstox-paper"])
def test_broker_kind_when_kind_unknown_then_raises_listing_known_kinds(name: str) -> None:
    with pytest.raises(ValueError, match="paper, zerodha"):
        topics.broker_kind(name)

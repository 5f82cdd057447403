"""Topic names and the pipeline table: the one source of truth for wiring.

Every runtime (the local dispatcher, the functions-framework adapter, the Helm chart tests,
the docs) derives which function consumes which topic from `PIPELINE`. Nothing else in the
project spells a topic name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

ASSET_CLASSES: tuple[str, ...] = ("equity", "fno")
"""Market data topics are per asset class, never per broker (paper trades on the live feed)."""

KNOWN_BROKER_KINDS: tuple[str, ...] = ("paper", "zerodha")

DLQ_SUFFIX = ".dlq"

# A broker name is a topic segment, a Redis key prefix and part of Kubernetes names, so it is
# restricted to what all three accept: lowercase letters, digits and inner dashes.
_BROKER_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class Scope(StrEnum):
    """Whether a function runs once for the whole deployment or once per broker."""

    SHARED = "shared"
    BROKER = "broker"


class Function(StrEnum):
    MARKET_FEED = "market_feed"
    STRATEGY_RUNNER = "strategy_runner"
    RISK_MANAGER = "risk_manager"
    TRADING_ENGINE = "trading_engine"
    ORDER_MATCHER = "order_matcher"
    PORTFOLIO_MANAGER = "portfolio_manager"

    @property
    def dns_name(self) -> str:
        """The name as a DNS label (Knative services, consumer groups): dashes, not underscores."""
        return self.value.replace("_", "-")


def market_ticks(asset_class: str) -> str:
    return f"market.{asset_class}.ticks"


def signals_raw(broker: str) -> str:
    return f"{broker}.signals.raw"


def signals_validated(broker: str) -> str:
    return f"{broker}.signals.validated"


def signals_rejected(broker: str) -> str:
    return f"{broker}.signals.rejected"


def orders_submitted(broker: str) -> str:
    return f"{broker}.orders.submitted"


def orders_filled(broker: str) -> str:
    return f"{broker}.orders.filled"


def orders_failed(broker: str) -> str:
    return f"{broker}.orders.failed"


def orders_cancelled(broker: str) -> str:
    return f"{broker}.orders.cancelled"


def orders_updated(broker: str) -> str:
    return f"{broker}.orders.updated"


def pnl_snapshots(broker: str) -> str:
    return f"{broker}.pnl.snapshots"


def alerts(broker: str) -> str:
    return f"{broker}.alerts"


def dlq(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


BROKER_TOPICS = (
    signals_raw,
    signals_validated,
    signals_rejected,
    orders_submitted,
    orders_filled,
    orders_failed,
    orders_cancelled,
    orders_updated,
    pnl_snapshots,
    alerts,
)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One row of the pipeline table: `function` consumes the topics `topics_for` names."""

    function: Function
    scope: Scope
    source: str
    """Topic template: `{broker}` or `{asset_class}` is filled in per broker / asset class."""
    kinds: tuple[str, ...] = KNOWN_BROKER_KINDS
    """The broker kinds this subscription exists for (the order matcher is paper-only)."""

    def topics(self, broker: str | None = None) -> list[str]:
        if "{asset_class}" in self.source:
            return [self.source.format(asset_class=a) for a in ASSET_CLASSES]
        if broker is None:
            raise ValueError(f"{self.function} reads broker topics: a broker is required")
        return [self.source.format(broker=broker)]

    def consumer_group(self, broker: str | None = None) -> str:
        """The Kafka consumer group: `alphapanda-{broker}-{function}` (`shared` for shared ones)."""
        owner = broker if self.scope is Scope.BROKER else "shared"
        return f"alphapanda-{owner}-{self.function.dns_name}"


PIPELINE: tuple[Subscription, ...] = (
    Subscription(Function.STRATEGY_RUNNER, Scope.SHARED, "market.{asset_class}.ticks"),
    Subscription(Function.RISK_MANAGER, Scope.BROKER, "{broker}.signals.raw"),
    Subscription(Function.TRADING_ENGINE, Scope.BROKER, "{broker}.signals.validated"),
    Subscription(Function.ORDER_MATCHER, Scope.BROKER, "market.{asset_class}.ticks", kinds=("paper",)),
    Subscription(Function.PORTFOLIO_MANAGER, Scope.BROKER, "{broker}.orders.filled"),
)
"""The pipeline: which function each topic triggers. The market feed is a source, not a subscriber."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A subscription made concrete for one broker (or for the shared scope)."""

    subscription: Subscription
    broker: str | None
    topics: tuple[str, ...]

    @property
    def function(self) -> Function:
        return self.subscription.function

    @property
    def consumer_group(self) -> str:
        return self.subscription.consumer_group(self.broker)


def bindings(brokers: list[str]) -> list[Binding]:
    """Every (function, broker) consumer the pipeline needs for `brokers`."""
    out: list[Binding] = []
    for sub in PIPELINE:
        if sub.scope is Scope.SHARED:
            out.append(Binding(sub, None, tuple(sub.topics())))
        else:
            out.extend(Binding(sub, b, tuple(sub.topics(b))) for b in brokers if broker_kind(b) in sub.kinds)
    return out


def all_topics(brokers: list[str]) -> list[str]:
    """Every topic (and its dead-letter topic) a deployment with `brokers` uses."""
    base = [market_ticks(a) for a in ASSET_CLASSES]
    for b in brokers:
        base.extend(make(b) for make in BROKER_TOPICS)
    return base + [dlq(t) for t in base]


def validate_broker_name(name: str) -> str:
    if not _BROKER_NAME.match(name):
        raise ValueError(
            f"broker name {name!r} is invalid: use lowercase letters, digits and dashes, "
            "starting with a letter (e.g. paper, zerodha, paper-replay)"
        )
    return name


def broker_kind(name: str) -> str:
    """The kind of trader behind a broker name: `paper-replay` is a paper broker."""
    kind = name.split("-", 1)[0]
    if kind not in KNOWN_BROKER_KINDS:
        raise ValueError(
            f"broker {name!r} is of no known kind: its name must start with one of "
            f"{', '.join(KNOWN_BROKER_KINDS)}"
        )
    return kind


def zerodha_brokers(brokers: Iterable[str]) -> tuple[str, ...]:
    """The zerodha-kind names among `brokers`, in order: they all trade through the one Kite
    app of the deployment's settings, so what is per app (postbacks, order rate) spans them."""
    return tuple(b for b in brokers if broker_kind(b) == "zerodha")


REPLAY_SUFFIX = "-replay"


def is_replay_broker(name: str) -> bool:
    """A replay broker (`paper-replay`) trades only ticks replayed for it, never live ones."""
    return name.endswith(REPLAY_SUFFIX)


def market_scope(broker: str) -> str | None:
    """Which ticks feed `broker`: live ticks (no broker extension: None), or for a replay broker
    only the ticks `alphapanda replay` stamped with its name.

    Stages that consume ticks (strategy runner, order matcher) keep market state (quotes,
    indicators) under this scope, so a replay never reads or moves live state.
    """
    return broker if is_replay_broker(broker) else None


def pipeline_markdown() -> str:
    """The pipeline table as Markdown: the README embeds this text, and a test keeps them equal."""
    lines = [
        "| function | scope | consumes | consumer group | dead letters to |",
        "|---|---|---|---|---|",
    ]
    for sub in PIPELINE:
        broker = None if sub.scope is Scope.SHARED else "{broker}"
        sources = sub.topics() if "{asset_class}" in sub.source else [sub.source]
        consumed = ", ".join(f"`{t}`" for t in sources)
        dead = ", ".join(f"`{dlq(t)}`" for t in sources)
        group = f"`{sub.consumer_group(broker)}`"
        scope = (
            sub.scope.value
            if sub.kinds == KNOWN_BROKER_KINDS
            else f"{sub.scope.value} ({', '.join(sub.kinds)})"
        )
        lines.append(f"| {sub.function.value} | {scope} | {consumed} | {group} | {dead} |")
    return "\n".join(lines)

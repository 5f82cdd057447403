"""Build the pipeline's parts from settings: one place, nothing built at import time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from alphapanda.brokers.factory import TraderFactory, TraderUnavailable
from alphapanda.bus.kafka import EventPublisher, ensure_topics
from alphapanda.config import Settings
from alphapanda.domain.calendar import load_trading_calendar
from alphapanda.domain.instruments import Instrument, load_instruments
from alphapanda.domain.risk import InstrumentLimits
from alphapanda.stages import AnyStage, Stage
from alphapanda.stages.order_matcher import OrderMatcher
from alphapanda.stages.portfolio_manager import PortfolioManager
from alphapanda.stages.risk_manager import RiskManager
from alphapanda.stages.strategy_runner import StrategyRunner
from alphapanda.stages.trading_engine import TradingEngine
from alphapanda.state.store import RedisStateStore
from alphapanda.strategies import StrategySpec, load_strategies
from alphapanda.topics import Function, all_topics, broker_kind, zerodha_brokers

if TYPE_CHECKING:
    from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis


def risk_limits_of(instrument: Instrument) -> InstrumentLimits:
    return InstrumentLimits(
        lot_size=instrument.lot_size,
        freeze_quantity=instrument.freeze_quantity,
        derivative=instrument.instrument_type != "EQ",
    )


@dataclass(frozen=True)
class Core:
    """The pure part of the pipeline: instruments, strategies and the stage handlers."""

    settings: Settings
    instruments: list[Instrument]
    strategies: list[StrategySpec]
    stages: dict[Function, Stage] = field(repr=False)
    kind_stages: dict[tuple[Function, str], AnyStage] = field(default_factory=dict, repr=False)
    """Stages that differ by broker kind (the zerodha trading engine), keyed (function, kind)."""

    @property
    def brokers(self) -> tuple[str, ...]:
        return self.settings.brokers

    def stage_for(self, function: Function, broker: str | None) -> AnyStage:
        """The stage that runs `function` for `broker` (its kind's own, else the common one)."""
        if broker is not None:
            special = self.kind_stages.get((function, broker_kind(broker)))
            if special is not None:
                return special
            common = self.stages[function]
            # A broker-scoped stage fed by a shared topic (the order matcher on ticks) serves
            # only the broker of the consumer that runs it.
            narrow = getattr(common, "for_broker", None)
            if narrow is not None:
                narrowed: AnyStage = narrow(broker)
                return narrowed
        return self.stages[function]


def build_core(settings: Settings) -> Core:
    instruments = load_instruments(settings.instruments_file)
    strategies = load_strategies(settings.strategies_file, instruments)
    brokers = frozenset(settings.brokers)
    by_token = {i.instrument_token: i for i in instruments}
    calendar = load_trading_calendar()
    traders = TraderFactory(settings, by_token)
    for broker in settings.brokers:
        traders.for_broker(broker)  # fail at start, not on the first signal
    stages: dict[Function, Stage] = {
        Function.STRATEGY_RUNNER: StrategyRunner(strategies, brokers),
        Function.RISK_MANAGER: RiskManager(
            brokers,
            limits_for=lambda b: settings.for_broker(b).risk,
            strategy_risk={s.name: s.risk for s in strategies},
            instruments={i.instrument_token: risk_limits_of(i) for i in instruments},
            calendar=calendar,
        ),
        Function.TRADING_ENGINE: TradingEngine(brokers, traders=traders),
        Function.ORDER_MATCHER: OrderMatcher(
            frozenset(b for b in brokers if broker_kind(b) == "paper"), traders=traders, strategies=strategies
        ),
        Function.PORTFOLIO_MANAGER: PortfolioManager(brokers, settings_for=settings.for_broker),
    }
    return Core(settings, instruments, strategies, stages, kind_stages=live_stages(settings))


def live_stages(settings: Settings) -> dict[tuple[Function, str], AnyStage]:
    """The stages of live broker kinds (the Zerodha trading engine), keyed (function, kind).

    Imported only when such a broker runs: `kiteconnect` pulls in Twisted.
    """
    zerodha = frozenset(zerodha_brokers(settings.brokers))
    if not zerodha:
        return {}
    from alphapanda.brokers.zerodha.trader import ZerodhaTrader

    try:
        trader = ZerodhaTrader(zerodha, settings.kite, claim_ttl_s=settings.redis.claim_ttl_s)
    except ValueError as exc:
        raise TraderUnavailable(str(exc)) from None
    return {(Function.TRADING_ENGINE, "zerodha"): trader}


@contextlib.contextmanager
def infrastructure(settings: Settings) -> Iterator[Settings]:
    """Yield `settings` with real Kafka and Redis endpoints: the configured ones, or embedded
    servers started here (and stopped when the block exits, however it exits)."""
    with contextlib.ExitStack() as stack:
        yield start_infrastructure(settings, stack)[0]


def start_infrastructure(
    settings: Settings, stack: contextlib.ExitStack
) -> tuple[Settings, list[EmbeddedKafka | EmbeddedRedis]]:
    """`settings` with real Kafka and Redis endpoints, and the embedded servers started for the
    ones not configured (stopped by `stack`): a caller that keeps them can notice one dying."""
    from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis

    servers: list[EmbeddedKafka | EmbeddedRedis] = []
    kafka, redis_settings = settings.kafka, settings.redis
    if not kafka.bootstrap_servers:
        broker = stack.enter_context(EmbeddedKafka())
        servers.append(broker)
        kafka = kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
    if not redis_settings.url:
        server = stack.enter_context(EmbeddedRedis())
        servers.append(server)
        redis_settings = redis_settings.model_copy(update={"url": server.url})
    return settings.model_copy(update={"kafka": kafka, "redis": redis_settings}), servers


def connect(
    settings: Settings, publisher: Callable[[str, float], EventPublisher] = EventPublisher
) -> tuple[RedisStateStore, EventPublisher]:
    """Connect to Redis and Kafka and create the deployment's topics if missing.

    `publisher` builds the producer: the HTTP adapter passes one that waits per request.
    """
    client = redis.Redis.from_url(settings.redis.url)
    client.ping()
    bootstrap = settings.kafka.bootstrap_servers
    ensure_topics(bootstrap, all_topics(list(settings.brokers)), settings.kafka.partitions)
    store = RedisStateStore(client, settings.redis.claim_ttl_s)
    return store, publisher(bootstrap, settings.kafka.ack_timeout_s)

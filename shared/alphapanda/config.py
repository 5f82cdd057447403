"""Settings, read from `ALPHAPANDA_*` environment variables (nested with `__`) and validated at start.

Examples:
    ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=kafka:9092      use this Kafka instead of the embedded broker
    ALPHAPANDA_REDIS__URL=redis://localhost:6379/0      use this Redis instead of the embedded one
    ALPHAPANDA_BROKERS=paper,zerodha                   the brokers whose pipelines run
    ALPHAPANDA_BROKER__PAPER__FILLS__SLIPPAGE_BPS=5    per-broker settings
    ALPHAPANDA_BROKER__PAPER__RISK__MAX_ORDER_VALUE=250000
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alphapanda import topics

ENV_PREFIX = "ALPHAPANDA_"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message is one line naming it and saying how to fix it."""


def cannot_start(function: str, problem: object) -> SystemExit:
    """What a function's server stops with, as it starts, when its settings are wrong: one line
    and exit code 1, so the pod crash-loops with the reason in its log. A SystemExit, because
    functions-framework prints a traceback for an exception raised while it loads the module."""
    return SystemExit(f"alphapanda {function} function: cannot start: {problem}")


T = TypeVar("T")


def first_instruments(instruments: Sequence[T], n: int | None) -> list[T]:
    """The first `n` of `instruments` (`--instruments N`; all of them if None). Asking for more
    than the list holds is an error, not a silently shorter run."""
    if n is not None and n > len(instruments):
        raise ConfigError(
            f"--instruments {n}: the instrument list has {len(instruments)}; ask for at most that many "
            f"(or set ALPHAPANDA_INSTRUMENTS_FILE to a longer list)"
        )
    return list(instruments[:n])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(
        default="", description="Kafka bootstrap servers; empty starts the embedded Tansu broker."
    )
    partitions: int = Field(default=3, ge=1, le=256, description="Partitions of each topic created at start.")
    fetch_wait_max_ms: int = Field(
        default=10, ge=1, le=5000, description="Consumer fetch wait: it sets pipeline latency."
    )
    session_timeout_ms: int = Field(default=6000, ge=1000, le=300000)
    ack_timeout_s: float = Field(
        default=15.0, gt=0, description="How long to wait for the broker to acknowledge outputs."
    )


class RedisSettings(_Section):
    url: str = Field(default="", description="Redis URL; empty starts the embedded redis-server.")
    claim_ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="How long a processed event id is remembered (and its outputs kept for replay).",
    )


class DeliverySettings(_Section):
    """How the local dispatcher retries, like a KafkaSource `delivery` block."""

    retries: int = Field(default=4, ge=0, le=100)
    backoff_delay_s: float = Field(default=0.05, gt=0, description="Exponential: delay * 2^attempt.")
    backoff_max_s: float = Field(default=2.0, gt=0)
    batch_size: int = Field(
        default=500,
        ge=1,
        le=100000,
        description="Most records a worker takes per poll; their state changes commit in a few "
        "transactions, their outputs are acknowledged together and their offsets committed once.",
    )


class RiskLimits(_Section):
    """A broker's risk limits. Strategies may tighten some of them in the strategies file."""

    max_order_value: Decimal = Field(default=Decimal("500000"), gt=0, description="Rupees per order.")
    max_position_quantity: int = Field(
        default=2000, gt=0, description="Absolute net quantity per instrument."
    )
    max_position_value: Decimal = Field(
        default=Decimal("1000000"), gt=0, description="Rupees of net position per instrument."
    )
    max_gross_exposure: Decimal = Field(
        default=Decimal("5000000"),
        gt=0,
        description="Rupees of all positions on the broker, long plus short.",
    )
    daily_loss_limit: Decimal = Field(
        default=Decimal("50000"),
        gt=0,
        description="Rupees of loss (realised + unrealised, today) at which the broker turns REDUCING.",
    )
    max_trades_per_day: int = Field(default=500, gt=0, description="Orders per strategy per trading day.")
    max_open_orders: int = Field(default=50, gt=0, description="Orders in flight or resting on the broker.")
    price_band_pct: Decimal = Field(
        default=Decimal("5"), gt=0, le=100, description="Signal price within this % of the last tick."
    )
    duplicate_window_s: float = Field(
        default=2.0,
        ge=0,
        description="The same signal (strategy, instrument, side, quantity) again within "
        "this many seconds of event time is suppressed; 0 turns it off.",
    )
    enforce_session: bool = Field(
        default=True, description="Only trade in the NSE session (09:15-15:30 IST on trading days)."
    )
    allowed_instruments: tuple[int, ...] | None = Field(
        default=None, description="Instrument tokens that may trade; unset allows every instrument."
    )


class FillSettings(_Section):
    """How a paper broker fills: slippage, latency, margin and the MIS square-off."""

    slippage_bps: Decimal = Field(default=Decimal("2"), ge=0, le=1000)
    fill_quote: Literal["latest", "signal"] = Field(
        default="latest",
        description="Paper fills against the latest quote in Redis (as live would), or against the "
        "touch of the tick that caused the signal (deterministic: replays and tests).",
    )
    latency_ms: int = Field(
        default=0,
        ge=0,
        le=60000,
        description="Simulated order latency: an order can only trade on ticks "
        "this much later than its signal (0: on the signal's own quote).",
    )
    walk_depth: bool = Field(default=True, description="Market orders consume the tick's depth levels.")
    mis_leverage: Decimal = Field(default=Decimal("5"), ge=1, le=50, description="Intraday (MIS) leverage.")
    nrml_margin_pct: Decimal = Field(
        default=Decimal("20"), gt=0, le=100, description="Margin blocked by NRML (F&O) positions, % of value."
    )
    square_off_time: time = Field(
        default=time(15, 20), description="MIS positions are closed at this IST time."
    )
    charges_broker: str = Field(default="zerodha", description="Whose charge schedule paper fills pay.")


class KiteSettings(_Section):
    """Zerodha Kite Connect. Point `root`/`ws_root` at the local sandbox to trade against it."""

    api_key: str = Field(default="", description="Kite Connect app key.")
    api_secret: SecretStr = Field(default=SecretStr(""), description="Kite Connect app secret; never logged.")
    root: str = Field(
        default="https://api.kite.trade", description="Kite REST root (the sandbox: http://127.0.0.1:PORT)."
    )
    ws_root: str = Field(
        default="wss://ws.kite.trade", description="KiteTicker root (the sandbox: ws://127.0.0.1:PORT)."
    )
    market_protection: Decimal = Field(
        default=Decimal("2"),
        description="Percent protection on MARKET and SL-M orders; exchanges reject 0 "
        "since April 2026 (-1 lets Kite choose).",
    )
    # Kite's limits per app (kite.trade docs, "Exceptions" page): above them the app gets 429s and breaks the
    # retail-algo rule, so a higher setting is refused here, when the settings are read.
    orders_per_second: int = Field(
        default=10, gt=0, le=10, description="Kite/SEBI retail-algo limit per app (at most 10)."
    )
    orders_per_minute: int = Field(
        default=200, gt=0, le=200, description="Kite's limit per app (at most 200)."
    )
    orders_per_day: int | None = Field(
        default=None,
        gt=0,
        description="A cap on orders per 24 hours per app; Kite's own is unverified, so none by default.",
    )
    request_timeout_s: float = Field(default=7.0, gt=0)
    algo_id: str = Field(default="", description="Exchange algo id to send with every order, if registered.")
    reconcile_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="`alphapanda run` checks the books against kite.positions() this often.",
    )


class BrokerSettings(_Section):
    starting_cash: Decimal = Field(default=Decimal("1000000"), ge=0)
    fills: FillSettings = Field(default_factory=FillSettings)
    risk: RiskLimits = Field(default_factory=RiskLimits)
    dp_charge: Decimal = Field(
        default=Decimal("13.5"),
        ge=0,
        le=1000,
        description="Rupees (before GST) the depository charges per scrip per day on which delivery "
        "holdings are sold: ~Rs 13.5 at Zerodha, unverified, so configurable; 0 turns it off.",
    )
    dp_charge_gst_pct: Decimal = Field(
        default=Decimal("18"), ge=0, le=100, description="GST on the DP charge, in percent."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    brokers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("paper",), description="Brokers whose pipelines run (comma list)."
    )
    broker: dict[str, BrokerSettings] = Field(default_factory=dict)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    kite: KiteSettings = Field(default_factory=KiteSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    strategies_file: Path | None = Field(
        default=None, description="Strategies YAML; unset uses the shipped one."
    )
    instruments_file: Path | None = Field(
        default=None, description="Instrument CSV; unset uses the shipped NSE list."
    )

    @field_validator("brokers", mode="before")
    @classmethod
    def _split_brokers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [b.strip() for b in value.split(",") if b.strip()]
        return value

    @field_validator("brokers")
    @classmethod
    def _check_brokers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one broker is required, e.g. paper")
        for name in value:
            topics.validate_broker_name(name)
            topics.broker_kind(name)
        if len(set(value)) != len(value):
            raise ValueError("a broker is named twice")
        return value

    @field_validator("strategies_file", "instruments_file")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("broker")
    @classmethod
    def _check_broker_sections(cls, value: dict[str, BrokerSettings]) -> dict[str, BrokerSettings]:
        # A field validator, not a model one, so the error is located at (and names) ALPHAPANDA_BROKER.
        for name in value:
            topics.validate_broker_name(name)
        return value

    def for_broker(self, name: str) -> BrokerSettings:
        return self.broker.get(name) or BrokerSettings()


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings; raise `ConfigError` with one line naming the bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    path = "__".join(str(p) for p in err["loc"]).upper()
    given = err.get("input")
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    msg = err["msg"].removeprefix("Value error, ")
    return f"setting {ENV_PREFIX}{path} is invalid: {msg}{shown}{more}"

"""Strategy runner: ticks in, signals out, fanned out to every broker a strategy trades on.

A live tick (no broker extension) feeds the live brokers; a tick `alphapanda replay` stamped
with a replay broker's name feeds that broker only, with its own indicator and quote keys, so a
replay never moves live state (see `topics.market_scope`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from alphapanda.domain.strategy import OrderIntent, TickView
from alphapanda.events import (
    Alert,
    Event,
    EventType,
    InvalidEvent,
    MarketTick,
    Severity,
    Side,
    Signal,
    derive_id,
    source_of,
)
from alphapanda.state import keys
from alphapanda.state.store import Decision
from alphapanda.strategies import StrategySpec
from alphapanda.topics import REPLAY_SUFFIX, Function, is_replay_broker, market_scope


@dataclass(frozen=True)
class StrategyRunner:
    strategies: Sequence[StrategySpec]
    brokers: frozenset[str]
    function: Function = Function.STRATEGY_RUNNER
    accepts: EventType = EventType.MARKET_TICK

    def owner(self, event: Event) -> str:
        return _scope(event) or "shared"

    def _specs_for(self, token: int) -> list[StrategySpec]:
        specs = self._by_token.get(token)
        if specs is None:
            specs = self._by_token[token] = tuple(s for s in self.strategies if token in s.tokens)
        return list(specs)

    @functools.cached_property
    def _by_token(self) -> dict[int, tuple[StrategySpec, ...]]:
        """The strategies of each instrument seen so far (the runner's strategies never change)."""
        return {}

    def reads(self, event: Event) -> list[str]:
        token = _tick(event).instrument_token
        scope = _scope(event)
        out: list[str] = []
        for spec in self._specs_for(token):
            out.append(keys.indicator(spec.name, token, scope))
            if not spec.builtin:
                out.append(keys.strategy_failures(spec.name, token, scope))
        return out

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        tick = _tick(event)
        token = tick.instrument_token
        view = TickView(
            token,
            (tick.bid + tick.ask) / 2,
            tick.last_price,
            tick.bid,
            tick.ask,
            tick.volume,
            tick.exchange_timestamp,
        )
        scope = _scope(event)
        writes = {
            keys.quote(token, scope): quote_json(tick),
            keys.symbol(token, scope): f"{tick.exchange}:{tick.tradingsymbol}",
        }
        outputs: list[Event] = []
        for spec in self._specs_for(token):
            key = keys.indicator(spec.name, token, scope)
            raw = values.get(key)
            if spec.builtin:
                state, intents = spec.strategy.on_tick(json.loads(raw) if raw else None, view)
                writes[key] = json.dumps(state)
            else:
                failures_key = keys.strategy_failures(spec.name, token, scope)
                streak = int(values.get(failures_key) or 0)
                try:
                    writes[key], intents = user_tick(spec, raw, view)
                except StrategyFailed as failed:
                    writes[failures_key] = str(streak + 1)
                    outputs.extend(self.failed(event, spec, failed, streak + 1))
                    continue
                if streak:
                    writes[failures_key] = "0"
                    outputs.extend(self.recovered(event, spec, streak))
            outputs.extend(self.signals(event, spec, intents, view.mid))
        return Decision(outputs=outputs, writes=writes)

    def failed(
        self, event: Event, spec: StrategySpec, failure: StrategyFailed, in_a_row: int = 1
    ) -> list[Event]:
        """The alerts, one per broker the tick feeds for `spec`, that its strategy failed on
        it, the `in_a_row`-th tick in a row it failed on; none unless `failure_alerted`.

        A user's strategy that raises is that strategy's fault, not the tick's: its state stays
        as it was, it sends nothing for this tick, and the other strategies of the instrument
        trade on as before (dead-lettering the tick would take it from all of them). A strategy
        that fails on every tick would send an alert per tick, thousands a second on a busy
        instrument, so alerts thin out as the failures go on: the 1st, 10th, 100th, ...
        """
        if not failure_alerted(in_a_row):
            return []
        tick = _tick(event)
        where = f"{tick.exchange}:{tick.tradingsymbol} at {tick.exchange_timestamp.isoformat()}"
        if in_a_row == 1:
            message = (
                f"strategy {spec.name!r} failed on {where}: {failure}; it sent nothing for "
                "this tick (next alert if it fails on 10 ticks in a row)"
            )
        else:
            message = (
                f"strategy {spec.name!r} failed again on {where}: {failure}; it has failed on "
                f"the last {in_a_row} ticks in a row and sent nothing for them (next alert at "
                f"{in_a_row * 10})"
            )
        return self._alerts(event, spec, "failed", "strategy_error", Severity.WARNING, message, in_a_row)

    def recovered(self, event: Event, spec: StrategySpec, failures: int) -> list[Event]:
        """The alerts, one per broker the tick feeds for `spec`, that its strategy ran again
        on it after failing on the `failures` ticks before it."""
        tick = _tick(event)
        message = (
            f"strategy {spec.name!r} trades again on {tick.exchange}:{tick.tradingsymbol} at "
            f"{tick.exchange_timestamp.isoformat()} after failing on {failures} "
            f"tick{'s' if failures != 1 else ''} in a row"
        )
        return self._alerts(event, spec, "recovered", "strategy_recovered", Severity.INFO, message, failures)

    def _alerts(
        self,
        event: Event,
        spec: StrategySpec,
        what: str,
        kind: str,
        severity: Severity,
        message: str,
        in_a_row: int,
    ) -> list[Event]:
        tick = _tick(event)
        alert = Alert(
            kind=kind,
            severity=severity,
            message=message,
            details={
                "strategy": spec.name,
                "instrument_token": str(tick.instrument_token),
                "failures_in_a_row": str(in_a_row),
            },
            raised_at=tick.exchange_timestamp,
        )
        source = source_of(self.function.value)
        return [
            event.child(f"{spec.name}/{what}/{broker}", alert, source=source, broker=broker)
            for broker in self._targets(spec, _scope(event))
        ]

    def _targets(self, spec: StrategySpec, scope: str | None) -> list[str]:
        """The brokers a tick of `scope` feeds for `spec`."""
        return [b for b in spec.brokers if b in self.brokers and market_scope(b) == scope]

    def signals(
        self, event: Event, spec: StrategySpec, intents: Sequence[OrderIntent], mid: Decimal
    ) -> list[Event]:
        """The signal events of `spec`'s `intents` on the tick in `event` (whose mid is `mid`).

        `decide` and the backtest (which calls `on_tick` on state it keeps decoded) both turn
        intents into signals here.
        """
        tick = _tick(event)
        scope = _scope(event)
        source = source_of(self.function.value)
        targets = self._targets(spec, scope)  # the same for each of its intents
        outputs: list[Event] = []
        for n, intent in enumerate(intents):
            # One trading idea, one correlation id, shared by the copy sent to every broker.
            correlationid = derive_id(event.id, spec.name, str(n), "idea")
            signal = Signal(
                instrument_token=tick.instrument_token,
                tradingsymbol=tick.tradingsymbol,
                exchange=tick.exchange,
                strategy=spec.name,
                side=intent.side,
                quantity=intent.quantity,
                product=spec.product,
                reference_price=mid,
                bid=tick.bid,
                ask=tick.ask,
                reason=intent.reason,
                tick_time=tick.exchange_timestamp,
            )
            for broker in targets:
                outputs.append(
                    event.child(
                        f"{spec.name}/{n}/{broker}/signal",
                        signal,
                        source=source,
                        broker=broker,
                        correlationid=correlationid,
                    )
                )
        return outputs


def failure_alerted(in_a_row: int) -> bool:
    """Whether the `in_a_row`-th failure in a row of a strategy on an instrument is alerted:
    the 1st, 10th, 100th, ... (a power of ten), so a strategy broken for a whole session sends
    a handful of alerts, each saying how long it has been failing."""
    while in_a_row >= 10 and in_a_row % 10 == 0:
        in_a_row //= 10
    return in_a_row == 1


class StrategyFailed(Exception):
    """A user's strategy raised, or answered something that is not (JSON state, intents)."""


def user_tick(spec: StrategySpec, raw: str | None, view: TickView) -> tuple[str, list[OrderIntent]]:
    """`on_tick` of a user's strategy on its stored state `raw` (JSON text, or None before its
    first tick), checked: its new state as JSON text and its intents, or `StrategyFailed`
    saying what went wrong.

    State goes in and out as text, decoded afresh for every call, in the pipeline and the
    backtest alike: a strategy that changes the state it was given and then fails leaves no
    trace in either, and one whose state JSON would change (a tuple) sees the same in both."""
    try:
        answer = spec.strategy.on_tick(json.loads(raw) if raw else None, view)
    except Exception as exc:  # the user's code: any exception is its own failure
        raise StrategyFailed(f"on_tick raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise StrategyFailed(f"on_tick must return (state, intents), not {type(answer).__name__}")
    new_state, intents = answer
    try:
        text = json.dumps(new_state)
    except (TypeError, ValueError) as exc:
        raise StrategyFailed(f"its state must be plain JSON (dicts, lists, str, numbers): {exc}") from None
    if not isinstance(intents, list):
        raise StrategyFailed(f"on_tick must return a list of OrderIntent, not {type(intents).__name__}")
    for intent in intents:
        if not isinstance(intent, OrderIntent):
            raise StrategyFailed(f"on_tick returned {type(intent).__name__}, not an OrderIntent")
        if (
            not isinstance(intent.side, Side)
            or type(intent.quantity) is not int
            or intent.quantity <= 0
            or not isinstance(intent.reason, str)
        ):
            raise StrategyFailed(
                "an OrderIntent needs a Side, a whole quantity above 0 and a text reason (got "
                f"{intent.side!r}, {intent.quantity!r}, {intent.reason!r})"
            )
    return text, intents


def quote_json(tick: MarketTick) -> str:
    """`json.dumps(Quote(bid, ask, last, exchange time).to_json())` of the tick, the same text
    written out (a unit test compares the two): it is stored on every tick."""
    return (
        f'{{"bid": "{tick.bid}", "ask": "{tick.ask}", "ltp": "{tick.last_price}", '
        f'"at": "{tick.exchange_timestamp.isoformat()}"}}'
    )


def _scope(event: Event) -> str | None:
    """The market scope of a tick: None for a live tick, else the replay broker it is for."""
    if event.broker is not None and not is_replay_broker(event.broker):
        raise InvalidEvent(
            f"tick {event.id} names broker {event.broker!r}: only replayed ticks name a broker, "
            f"and only a replay broker (named *{REPLAY_SUFFIX})"
        )
    return event.broker


def _tick(event: Event) -> MarketTick:
    assert isinstance(event.data, MarketTick)
    return event.data

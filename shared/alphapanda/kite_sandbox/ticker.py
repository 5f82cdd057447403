"""The KiteTicker WebSocket: subscriptions, binary tick frames, heartbeats and order updates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .config import SandboxConfig
from .exchange import Exchange
from .packets import HEARTBEAT, MODE_QUOTE, MODES
from .session import SessionStore

log = logging.getLogger(__name__)

# Closing before accept makes the server refuse the upgrade with HTTP 403, as Kite does for a bad token.
_POLICY_VIOLATION = 1008


@dataclass(eq=False, slots=True)
class TickerConnection:
    access_token: str
    queue: asyncio.Queue[bytes | str]
    modes: dict[int, str] = field(default_factory=dict)


class TickerHub:
    def __init__(self, exchange: Exchange, sessions: SessionStore, config: SandboxConfig) -> None:
        self._exchange = exchange
        self._sessions = sessions
        self._config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: set[TickerConnection] = set()

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def notify_ticks(self, tokens: list[int]) -> None:
        self._call_in_loop(self._fanout_ticks, list(tokens))

    def notify_order(self, payload: dict[str, Any]) -> None:
        self._call_in_loop(self._fanout_text, json.dumps({"type": "order", "data": payload}))

    def _call_in_loop(self, callback: Any, argument: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            callback(argument)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, argument)

    def _fanout_ticks(self, tokens: list[int]) -> None:
        for connection in list(self._connections):
            modes = {token: connection.modes[token] for token in tokens if token in connection.modes}
            if modes:
                self._push_frame(connection, modes)

    def _fanout_text(self, text: str) -> None:
        for connection in list(self._connections):
            connection.queue.put_nowait(text)

    def _push_frame(self, connection: TickerConnection, modes: dict[int, str]) -> None:
        frame = self._exchange.tick_frame(modes)
        if frame is not None:
            connection.queue.put_nowait(frame)

    async def endpoint(self, websocket: WebSocket) -> None:
        api_key = websocket.query_params.get("api_key")
        access_token = websocket.query_params.get("access_token")
        if (
            not self._sessions.is_valid(api_key, access_token)
            or len(self._connections) >= self._config.max_ws_connections
        ):
            await websocket.close(code=_POLICY_VIOLATION)
            return
        await websocket.accept()
        connection = TickerConnection(access_token or "", asyncio.Queue())
        self._connections.add(connection)
        pump = asyncio.create_task(self._pump(websocket, connection))
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None and message.get("bytes") is not None:
                    raw = message["bytes"].decode("utf-8", "replace")
                if raw is not None:
                    self._handle(connection, raw)
        finally:
            self._connections.discard(connection)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(self, websocket: WebSocket, connection: TickerConnection) -> None:
        try:
            while True:
                try:
                    item = await asyncio.wait_for(connection.queue.get(), self._config.heartbeat_interval)
                except TimeoutError:
                    item = HEARTBEAT
                if isinstance(item, bytes):
                    await websocket.send_bytes(item)
                else:
                    await websocket.send_text(item)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    def _error(self, connection: TickerConnection, text: str) -> None:
        connection.queue.put_nowait(json.dumps({"type": "error", "data": text}))

    def _handle(self, connection: TickerConnection, raw: str) -> None:
        try:
            message = json.loads(raw)
            action = message["a"]
            value = message["v"]
        except (ValueError, KeyError, TypeError):
            self._error(connection, "Invalid message")
            return
        if action in ("subscribe", "unsubscribe"):
            tokens = _tokens(value)
            if tokens is None:
                self._error(connection, "Invalid instrument tokens")
            elif action == "subscribe":
                self._subscribe(connection, tokens)
            else:
                for token in tokens:
                    connection.modes.pop(token, None)
        elif action == "mode":
            if not isinstance(value, list) or len(value) != 2 or value[0] not in MODES:
                self._error(connection, "Invalid mode")
                return
            tokens = _tokens(value[1])
            if tokens is None:
                self._error(connection, "Invalid instrument tokens")
                return
            # Mode applies to subscribed tokens only: the documented flow is subscribe, then mode.
            changed = {token: value[0] for token in tokens if token in connection.modes}
            connection.modes.update(changed)
            if changed:
                self._push_frame(connection, changed)
        else:
            self._error(connection, f"Unknown action {action!r}")

    def _subscribe(self, connection: TickerConnection, tokens: list[int]) -> None:
        fresh = [t for t in dict.fromkeys(tokens) if t not in connection.modes and self._exchange.lookup(t)]
        room = self._config.max_ws_instruments - len(connection.modes)
        if len(fresh) > room:
            self._error(
                connection, f"Subscription limit of {self._config.max_ws_instruments} instruments exceeded"
            )
            fresh = fresh[: max(room, 0)]
        for token in fresh:
            connection.modes[token] = MODE_QUOTE
        if fresh:
            self._push_frame(connection, {token: MODE_QUOTE for token in fresh})


def _tokens(value: object) -> list[int] | None:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    return list(value)

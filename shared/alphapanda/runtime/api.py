"""The read API: what each broker holds and earned, an order's status, and the Kite login callback.

`ReadApi` is free of any web framework (method, path and query in; status and JSON out) so it is
tested directly; functions/api serves it behind functions-framework. It only reads trading
state: positions, cash and PnL as the portfolio manager last wrote them, priced at the latest
quote as the terminal summary prices them (`reports.broker_summary`). The one write is the Kite
session the login callback stores (`session.login_callback`), which is not trading state.

Routes (GET only):
  /healthz                               {"status": "ok"}
  /brokers                               every configured broker's summary
  /brokers/{broker}                      one broker's summary
  /brokers/{broker}/positions            its open positions, per strategy and instrument
  /brokers/{broker}/orders/{order_id}    an order's status, as the trading stages record it
  /login/{broker}?request_token=...      a zerodha broker's Kite login redirect (register
                                         https://<api host>/login/<broker> as the Kite app's
                                         redirect URL)
Money is a decimal string (never a binary float), as in the events.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from alphapanda.brokers.base import Quote
from alphapanda.domain.risk import BrokerState
from alphapanda.runtime.reports import BrokerSummary, books, broker_summary
from alphapanda.state import keys
from alphapanda.state.store import StateStore
from alphapanda.topics import broker_kind, market_scope

if TYPE_CHECKING:
    import redis

    from alphapanda.config import Settings

Login = Callable[[Mapping[str, str], str], tuple[int, str]]
"""(query, broker) -> (status, text): `session.login_callback` bound to the Kite settings and Redis."""


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict[str, Any]

    @property
    def text(self) -> str:
        return json.dumps(self.body, sort_keys=True)


class ReadApi:
    """The routes above over a state store, for the configured `brokers`."""

    def __init__(self, store: StateStore, brokers: Sequence[str], login: Login | None = None) -> None:
        self._store = store
        self._brokers = tuple(brokers)
        self._login = login

    def __call__(self, method: str, path: str, query: Mapping[str, str]) -> ApiResponse:
        if method not in ("GET", "HEAD"):
            return _error(405, f"{method} is not allowed: this API only reads (use GET)")
        parts = [p for p in path.split("/") if p]
        if parts == ["healthz"]:
            return ApiResponse(200, {"status": "ok"})
        if parts == ["brokers"]:
            return ApiResponse(200, {"brokers": [self._summary(b) for b in self._brokers]})
        if len(parts) >= 2 and parts[0] in ("brokers", "login"):
            broker = parts[1]
            if broker not in self._brokers:
                return _error(404, f"no broker {broker!r} here; the brokers are {', '.join(self._brokers)}")
            if parts[0] == "login" and len(parts) == 2:
                return self._login_route(broker, query)
            if len(parts) == 2:
                return ApiResponse(200, self._summary(broker))
            if parts[2:] == ["positions"]:
                return ApiResponse(200, {"broker": broker, "positions": self._positions(broker)})
            if len(parts) == 4 and parts[2] == "orders":
                return self._order(broker, parts[3])
        return _error(404, f"no route {path!r}; see GET /brokers, /brokers/<broker>/positions")

    def _summary(self, broker: str) -> dict[str, Any]:
        summary: BrokerSummary = broker_summary(self._store, broker)
        return {
            "broker": broker,
            "state": self._store.get(keys.control(broker)) or BrokerState.ACTIVE.value,
            "open_positions": summary.open_positions,
            "trades": summary.trades,
            "realised_pnl": _rupees(summary.realised_pnl),
            "unrealised_pnl": _rupees(summary.unrealised_pnl),
            "total_pnl": _rupees(summary.total_pnl),
            "cash": _rupees(summary.cash),
            "charges": _rupees(summary.charges),
        }

    def _positions(self, broker: str) -> list[dict[str, Any]]:
        out = []
        scope = market_scope(broker)
        market: dict[int, tuple[Decimal | None, str | None]] = {}  # each instrument read once
        for strategy, book in books(self._store, broker).items():
            for token, pos in book.positions:
                if pos.net_quantity == 0:
                    continue
                if token not in market:
                    raw = self._store.get(keys.quote(token, scope))
                    last = Quote.from_json(json.loads(raw)).last_price if raw else None
                    market[token] = (last, self._store.get(keys.symbol(token, scope)))
                mark, named = market[token]
                out.append(
                    {
                        "strategy": strategy,
                        "instrument_token": token,
                        # `EXCHANGE:SYMBOL` as the last tick named it (None before any tick).
                        "instrument": named,
                        "product": pos.product,
                        "quantity": pos.net_quantity,
                        "average_price": _price(pos.average_price),
                        "realised_pnl": _rupees(pos.realised_pnl),
                        "last_price": _price(mark) if mark is not None else None,
                        "unrealised_pnl": _rupees(pos.unrealised_pnl(mark)) if mark is not None else None,
                    }
                )
        return out

    def _order(self, broker: str, order_id: str) -> ApiResponse:
        raw = self._store.get(keys.order(broker, order_id))
        if raw is None:
            return _error(404, f"no order {order_id!r} on {broker}")
        return ApiResponse(200, {"broker": broker, "order_id": order_id, **json.loads(raw)})

    def _login_route(self, broker: str, query: Mapping[str, str]) -> ApiResponse:
        if broker_kind(broker) != "zerodha" or self._login is None:
            return _error(404, f"{broker} has no Kite login: only a zerodha broker logs in")
        status, text = self._login(query, broker)
        return ApiResponse(status, {"broker": broker, "message": text})


_PAISA = Decimal("0.01")
_PRICE_PLACES = Decimal("0.0001")


def _rupees(value: Decimal) -> str:
    """Money to the paisa (half up), as a contract note shows it: sums of exact values carry
    trailing digits ("-2413.1200") that say nothing."""
    return str(value.quantize(_PAISA, rounding=ROUND_HALF_UP))


def _price(value: Decimal) -> str:
    """A price to the paisa, or to 4 places when it is an average between paise."""
    fine = value.quantize(_PRICE_PLACES, rounding=ROUND_HALF_UP)
    coarse = fine.quantize(_PAISA)
    return str(coarse if coarse == fine else fine)


def _error(status: int, message: str) -> ApiResponse:
    return ApiResponse(status, {"error": message})


class LazyReadApi:
    """`ReadApi` on the settings' Redis, connected on the first request: functions-framework
    imports the module before the pod's network is up, and a failed connect must answer 503
    (and be retried on the next request), not stop the server."""

    def __init__(self) -> None:
        from alphapanda.config import ConfigError, cannot_start

        self._api: ReadApi | None = None
        self._lock = threading.Lock()
        try:
            # The settings are read as the server starts, so a wrong one stops it with one line
            # rather than answering 503 for ever; only the connection waits for a request.
            self._settings = _api_settings()
        except ConfigError as exc:
            raise cannot_start("api", exc) from None

    def __call__(self, method: str, path: str, query: Mapping[str, str]) -> ApiResponse:
        try:
            api = self._connected()
        except Exception as exc:  # any connect failure is the same answer: not ready yet
            return _error(503, f"the read API cannot reach its state yet: {exc}")
        return api(method, path, query)

    def _connected(self) -> ReadApi:
        with self._lock:
            if self._api is None:
                self._api = _connect(self._settings)
            return self._api


def _api_settings() -> Settings:
    from alphapanda.config import ConfigError, load_settings

    settings = load_settings()
    if not settings.redis.url:
        raise ConfigError("the read API needs ALPHAPANDA_REDIS__URL")
    return settings


def _connect(settings: Settings) -> ReadApi:
    import redis

    from alphapanda.state.store import RedisStateStore

    client: Any = redis.Redis.from_url(settings.redis.url)
    client.ping()
    store = RedisStateStore(client, settings.redis.claim_ttl_s)
    return ReadApi(store, settings.brokers, kite_login(settings, client))


def kite_login(settings: Settings, client: redis.Redis) -> Login:
    """`session.login_callback` for the settings' Kite app, storing sessions through `client`."""
    from alphapanda.brokers.zerodha.session import login_callback

    def login(query: Mapping[str, str], broker: str) -> tuple[int, str]:
        answer = login_callback(query, settings.kite, client, broker)
        return answer.status, answer.body

    return login


Routes = Callable[[str, str, Mapping[str, str]], ApiResponse]
"""(method, path, query) -> answer: a `ReadApi`, `LazyReadApi` or `PendingReadApi`."""


class PendingReadApi:
    """Answers 503 until `ready` gives it the `ReadApi`: `alphapanda run` binds the API's port
    before it starts its servers (a port in use is then refused before anything started)."""

    def __init__(self) -> None:
        self._api: ReadApi | None = None

    def ready(self, api: ReadApi) -> None:
        self._api = api

    def __call__(self, method: str, path: str, query: Mapping[str, str]) -> ApiResponse:
        api = self._api
        if api is None:
            return _error(503, "the run is still starting: try again in a moment")
        return api(method, path, query)


def serve_read_api(api: Routes, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve `api` on host:port (0: a free port) from a daemon thread; `shutdown()` stops it.

    For `alphapanda run --api-port`: the standard library's threading server rather than
    functions-framework, because there the API is a thread of the run's own process, beside its
    consumers, with no worker processes of its own to start and stop. Raises OSError if the
    port cannot be bound.
    """

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urlsplit(self.path)
            response = api(self.command, url.path, dict(parse_qsl(url.query)))
            body = response.text.encode()
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the run's terminal view is not a request log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="read-api", daemon=True).start()
    return server

"""The Starlette application: Kite Connect v3 HTTP routes, the ticker WebSocket and `/_sandbox` controls."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._common import KiteError, dumps, error_for_status, input_error, kite_timestamp, too_many_requests
from .config import SandboxConfig
from .exchange import Exchange
from .faults import Faults
from .instruments import instruments_csv
from .postback import PostbackSender
from .ratelimit import RateLimiter
from .session import AccessToken, SessionStore
from .ticker import TickerHub

log = logging.getLogger(__name__)

DROP_SCOPE_KEY = "alphapanda.kite_sandbox.drop_response"

EndpointKind = Literal["order_place", "quote", "other"]
Handler = Callable[[Request], Awaitable[Any]]

_QUOTE_LIMITS = {"full": 500, "ohlc": 1000, "ltp": 1000}


@dataclass(slots=True)
class Services:
    api_key: str
    config: SandboxConfig
    exchange: Exchange
    sessions: SessionStore
    faults: Faults
    hub: TickerHub
    postbacks: PostbackSender | None
    redirect_url: str | None


def json_response(payload: object, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")


def session_payload(services: Services, token: AccessToken) -> dict[str, Any]:
    config = services.config
    return {
        "user_type": "individual",
        "email": config.email,
        "user_name": config.user_name,
        "user_shortname": config.user_shortname,
        "broker": "ZERODHA",
        "exchanges": ["NSE", "NFO", "BFO", "CDS", "BSE", "MCX", "BCD", "MF"],
        "products": ["CNC", "NRML", "MIS", "BO", "CO"],
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
        "avatar_url": None,
        "user_id": config.user_id,
        "api_key": services.api_key,
        "access_token": token.token,
        "public_token": token.token[:16],
        "enctoken": "",
        "refresh_token": "",
        "silo": "",
        "login_time": kite_timestamp(token.issued_at),
        "meta": {"demat_consent": "physical"},
    }


def profile_payload(config: SandboxConfig) -> dict[str, Any]:
    return {
        "user_id": config.user_id,
        "user_type": "individual",
        "email": config.email,
        "user_name": config.user_name,
        "user_shortname": config.user_shortname,
        "broker": "ZERODHA",
        "exchanges": ["NSE", "NFO", "BFO", "CDS", "BSE", "MCX", "BCD", "MF"],
        "products": ["CNC", "NRML", "MIS", "BO", "CO"],
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
        "avatar_url": None,
        "meta": {"demat_consent": "physical"},
    }


async def _form(request: Request) -> dict[str, str]:
    # Parsed by hand: Starlette's form parser needs python-multipart even for urlencoded bodies.
    body = (await request.body()).decode("utf-8", "replace")
    if "json" in request.headers.get("content-type", ""):
        try:
            data = json.loads(body or "{}")
        except ValueError:
            raise input_error("Invalid JSON body.") from None
        if not isinstance(data, dict):
            raise input_error("Invalid JSON body.")
        return {str(k): "" if v is None else str(v) for k, v in data.items()}
    return dict(parse_qsl(body, keep_blank_values=True))


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body:
        return {}
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


class DropOrderResponses:
    """Outermost ASGI layer: when a handler marks the scope, close the TCP connection instead of
    answering, so the client sees a connection error although the request took effect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded_send(message: Message) -> None:
            if scope.get(DROP_SCOPE_KEY):
                if message["type"] == "http.response.start":
                    _abort_connection(send)
                return
            await send(message)

        await self.app(scope, receive, guarded_send)
        if scope.get(DROP_SCOPE_KEY):
            # Let the server see the connection is gone before it considers sending a 500.
            await asyncio.sleep(0.05)


def _abort_connection(send: Send) -> None:
    # uvicorn's `send` is a bound method of its request cycle, which holds the asyncio transport.
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("cannot drop the connection: server does not expose its transport")
    transport.abort()


def build_app(services: Services) -> ASGIApp:
    """Assemble the ASGI app serving both the REST API and (at `/`) the ticker WebSocket."""
    config = services.config
    exchange = services.exchange
    limiters: dict[EndpointKind, RateLimiter] = {
        "order_place": RateLimiter.build(
            config.order_rate_per_second, config.order_rate_per_minute, config.order_rate_per_day
        ),
        "quote": RateLimiter.build(config.quote_rate_per_second),
        "other": RateLimiter.build(config.other_rate_per_second),
    }

    def kite(
        path: str, method: str, handler: Handler, *, kind: EndpointKind = "other", auth: bool = True
    ) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                failure = services.faults.forced_failure(request.method, request.url.path)
                if failure is not None:
                    raise failure
                if auth:
                    services.sessions.authenticate(request.headers.get("authorization"))
                if not limiters[kind].admit():
                    raise too_many_requests()
                result = await handler(request)
            except KiteError as exc:
                return json_response(exc.envelope(), exc.status)
            except Exception:
                log.exception("sandbox handler failed: %s %s", request.method, request.url.path)
                error = error_for_status(500)
                return json_response(error.envelope(), error.status)
            if isinstance(result, Response):
                return result
            return json_response({"status": "success", "data": result})

        return Route(path, endpoint, methods=[method])

    async def create_session(request: Request) -> Any:
        params = await _form(request)
        token = services.sessions.exchange(
            params.get("api_key", ""), params.get("request_token", ""), params.get("checksum", "")
        )
        return session_payload(services, token)

    async def delete_session(request: Request) -> Any:
        params = dict(request.query_params)
        if params.get("api_key") != services.api_key:
            raise KiteError(403, "TokenException", "Invalid `api_key`.")
        services.sessions.revoke(params.get("access_token") or "")
        return True

    async def profile(request: Request) -> Any:
        return profile_payload(config)

    async def margins(request: Request) -> Any:
        return exchange.margins(request.path_params.get("segment"))

    async def login(request: Request) -> Response:
        if request.query_params.get("api_key") != services.api_key:
            return json_response(KiteError(400, "InputException", "Invalid `api_key`.").envelope(), 400)
        token = services.sessions.issue_request_token()
        if services.redirect_url is None:
            return json_response({"status": "success", "data": {"request_token": token}})
        query = {"action": "login", "type": "login", "status": "success", "request_token": token}
        extra = request.query_params.get("redirect_params")
        if extra:
            query.update(parse_qsl(extra))
        separator = "&" if "?" in services.redirect_url else "?"
        return RedirectResponse(f"{services.redirect_url}{separator}{urlencode(query)}", status_code=302)

    async def list_orders(request: Request) -> Any:
        return exchange.orders()

    async def place_order(request: Request) -> Any:
        params = await _form(request)
        order_id = exchange.place(request.path_params["variety"], params)
        if services.faults.take_drop():
            request.scope[DROP_SCOPE_KEY] = True
        return {"order_id": order_id}

    async def order_history(request: Request) -> Any:
        return exchange.order_history(request.path_params["order_id"])

    async def modify_order(request: Request) -> Any:
        params = await _form(request)
        order_id = exchange.modify(request.path_params["variety"], request.path_params["order_id"], params)
        return {"order_id": order_id}

    async def cancel_order(request: Request) -> Any:
        order_id = exchange.cancel(request.path_params["variety"], request.path_params["order_id"])
        return {"order_id": order_id}

    async def order_trades(request: Request) -> Any:
        return exchange.trades(request.path_params["order_id"])

    async def trades(request: Request) -> Any:
        return exchange.trades()

    async def positions(request: Request) -> Any:
        return exchange.positions()

    async def holdings(request: Request) -> Any:
        return exchange.holdings()

    async def instruments(request: Request) -> Response:
        wanted = request.path_params.get("exchange")
        rows = [i for i in exchange.instruments if wanted is None or i.exchange == wanted]
        body = instruments_csv(rows).encode()
        headers: dict[str, str] = {}
        # Kite serves the dump gzipped; requests undoes Content-Encoding before the client parses it.
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="text/csv", headers=headers)

    def quote_handler(kind: Literal["full", "ohlc", "ltp"]) -> Handler:
        async def handler(request: Request) -> Any:
            refs = request.query_params.getlist("i")
            if not refs:
                raise input_error("No instruments specified. Pass one or more `i` parameters.")
            if len(refs) > _QUOTE_LIMITS[kind]:
                raise input_error(f"A maximum of {_QUOTE_LIMITS[kind]} instruments are allowed per request.")
            return exchange.quote(refs, kind)

        return handler

    def control(path: str, method: str, action: Callable[[Request], Awaitable[Any]]) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                result = await action(request)
            except (KeyError, ValueError, TypeError, InvalidOperation) as exc:
                return Response(
                    json.dumps({"error": str(exc)}), status_code=400, media_type="application/json"
                )
            return json_response(result)

        return Route(f"/_sandbox/{path}", endpoint, methods=[method])

    async def c_request_token(request: Request) -> Any:
        return {"request_token": services.sessions.issue_request_token()}

    async def c_session(request: Request) -> Any:
        return session_payload(services, services.sessions.issue_access_token())

    async def c_expire_token(request: Request) -> Any:
        body = await _json_body(request)
        return {"expired": services.sessions.revoke(body.get("access_token"))}

    async def c_drop(request: Request) -> Any:
        body = await _json_body(request)
        services.faults.drop_next_order_responses(int(body.get("count", 1)))
        return {"ok": True}

    async def c_fail(request: Request) -> Any:
        body = await _json_body(request)
        services.faults.fail_next(
            int(body.get("count", 1)),
            int(body.get("status", 500)),
            message=body.get("message"),
            method=body.get("method"),
            path_prefix=body.get("path"),
        )
        return {"ok": True}

    async def c_reject(request: Request) -> Any:
        body = await _json_body(request)
        exchange.reject_next_order(str(body.get("message", "Order rejected by the sandbox.")))
        return {"ok": True}

    async def c_partial(request: Request) -> Any:
        body = await _json_body(request)
        remainder = body.get("remainder", "rest")
        if remainder not in ("rest", "cancel", "fill"):
            raise ValueError("remainder must be rest, cancel or fill")
        exchange.partial_fill_next(int(body["quantity"]), remainder)
        return {"ok": True}

    async def c_set_price(request: Request) -> Any:
        body = await _json_body(request)
        exchange.set_price(body["instrument"], Decimal(str(body["price"])), hold=bool(body.get("hold", True)))
        return {"instrument": body["instrument"], "price": exchange.price(body["instrument"])}

    async def c_get_price(request: Request) -> Any:
        ref = request.query_params["instrument"]
        return {"instrument": ref, "price": exchange.price(ref)}

    async def c_release(request: Request) -> Any:
        body = await _json_body(request)
        exchange.release_price(body["instrument"])
        return {"ok": True}

    async def c_step(request: Request) -> Any:
        body = await _json_body(request)
        for _ in range(int(body.get("steps", 1))):
            exchange.step_market()
        return {"ok": True}

    async def c_orders(request: Request) -> Any:
        return exchange.orders(request.query_params.get("tag"))

    async def c_fill(request: Request) -> Any:
        body = await _json_body(request)
        quantity = body.get("quantity")
        price = body.get("price")
        exchange.fill(
            str(body["order_id"]),
            None if quantity is None else int(quantity),
            None if price is None else Decimal(str(price)),
        )
        return exchange.order(str(body["order_id"]))

    async def c_postbacks(request: Request) -> Any:
        sender = services.postbacks
        if sender is None:
            return []
        return [{"payload": d.payload, "status": d.status, "error": d.error} for d in sender.deliveries]

    routes: list[BaseRoute] = [
        kite("/session/token", "POST", create_session, auth=False),
        kite("/session/token", "DELETE", delete_session, auth=False),
        kite("/user/profile", "GET", profile),
        kite("/user/margins", "GET", margins),
        kite("/user/margins/{segment}", "GET", margins),
        kite("/orders", "GET", list_orders),
        kite("/orders/{order_id}/trades", "GET", order_trades),
        kite("/orders/{variety}", "POST", place_order, kind="order_place"),
        kite("/orders/{order_id}", "GET", order_history),
        kite("/orders/{variety}/{order_id}", "PUT", modify_order),
        kite("/orders/{variety}/{order_id}", "DELETE", cancel_order),
        kite("/trades", "GET", trades),
        kite("/portfolio/positions", "GET", positions),
        kite("/portfolio/holdings", "GET", holdings),
        kite("/instruments", "GET", instruments),
        kite("/instruments/{exchange}", "GET", instruments),
        kite("/quote", "GET", quote_handler("full"), kind="quote"),
        kite("/quote/ohlc", "GET", quote_handler("ohlc"), kind="quote"),
        kite("/quote/ltp", "GET", quote_handler("ltp"), kind="quote"),
        Route("/connect/login", login, methods=["GET"]),
        control("request_token", "POST", c_request_token),
        control("session", "POST", c_session),
        control("expire_token", "POST", c_expire_token),
        control("drop_next_order_response", "POST", c_drop),
        control("fail_next", "POST", c_fail),
        control("reject_next_order", "POST", c_reject),
        control("partial_fill_next", "POST", c_partial),
        control("price", "POST", c_set_price),
        control("price", "GET", c_get_price),
        control("release_price", "POST", c_release),
        control("step", "POST", c_step),
        control("orders", "GET", c_orders),
        control("fill", "POST", c_fill),
        control("postbacks", "GET", c_postbacks),
        WebSocketRoute("/", services.hub.endpoint),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        error = error_for_status(status, "Route not found" if status == 404 else None)
        if status == 405:
            error = KiteError(405, "GeneralException", "Method not allowed")
        return json_response(error.envelope(), status)

    app = Starlette(routes=routes, exception_handlers={404: http_error, 405: http_error})
    return DropOrderResponses(app)

"""`KiteSandbox`: the sandbox servers on loopback ports, run from a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable
from decimal import Decimal
from types import TracebackType
from typing import Any

import uvicorn

from ._common import Clock, ist_now
from .api import Services, build_app
from .config import SandboxConfig
from .exchange import Exchange, OrderEvent, Remainder
from .faults import Faults
from .instruments import Instrument, default_instruments
from .orders import FINAL_STATUSES
from .portfolio import Holding
from .postback import PostbackDelivery, PostbackSender, order_update_payload
from .session import SessionStore
from .ticker import TickerHub

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


ALL_INTERFACES = "0.0.0.0"


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it each response waits ~40 ms on delayed ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class KiteSandbox:
    """A local Kite Connect v3 server (REST on `root`, KiteTicker on `ws_root`) for tests and demos.

    Point the official client at it with
    `KiteConnect(api_key, root=sandbox.root, disable_ssl=True)` and
    `KiteTicker(api_key, access_token, root=sandbox.ws_root)`. Every control method is safe to
    call from any thread while the sandbox runs. It listens on loopback unless `host` names
    another IPv4 address (`ALL_INTERFACES` in a container, for other pods to reach it).
    """

    def __init__(
        self,
        api_key: str = "sandbox_api_key",
        api_secret: str = "sandbox_api_secret",
        *,
        instruments: Iterable[Instrument] | None = None,
        seed: int = 0,
        postback_url: str | None = None,
        holdings: Iterable[Holding] = (),
        config: SandboxConfig | None = None,
        clock: Clock | None = None,
        port: int = 0,
        ws_port: int = 0,
        redirect_url: str | None = None,
        host: str = LOOPBACK,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.config = config or SandboxConfig()
        self._clock = clock or ist_now
        self.exchange = Exchange(
            default_instruments(self._clock().date()) if instruments is None else instruments,
            config=self.config,
            seed=seed,
            clock=self._clock,
            holdings=holdings,
        )
        self.sessions = SessionStore(
            api_key,
            api_secret,
            clock=self._clock,
            request_token_ttl=self.config.request_token_ttl,
            expiry_hour=self.config.token_expiry_hour,
        )
        self.faults = Faults()
        self.hub = TickerHub(self.exchange, self.sessions, self.config)
        self._postbacks = (
            PostbackSender(postback_url, timeout=self.config.postback_timeout) if postback_url else None
        )
        self.exchange.add_order_listener(self._on_order_event)
        self.exchange.add_tick_listener(self.hub.notify_ticks)
        self._app = build_app(
            Services(
                api_key=api_key,
                config=self.config,
                exchange=self.exchange,
                sessions=self.sessions,
                faults=self.faults,
                hub=self.hub,
                postbacks=self._postbacks,
                redirect_url=redirect_url,
            )
        )
        self._host = host
        self._ports = (port, ws_port)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[uvicorn.Server] = []
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.root = ""
        self.ws_root = ""

    def start(self, timeout: float = 10.0) -> KiteSandbox:
        """Bind the ports, start serving and return once both servers accept connections."""
        if self._thread is not None:
            raise RuntimeError("sandbox already started")
        sockets = [_bind(self._host, port) for port in self._ports]
        # Bound to every interface, it is reachable on loopback too: the roots name an address
        # a client on this machine can always use (others reach it by the machine's own name).
        reach = LOOPBACK if self._host == ALL_INTERFACES else self._host
        self.root = f"http://{reach}:{sockets[0].getsockname()[1]}"
        self.ws_root = f"ws://{reach}:{sockets[1].getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, args=(sockets,), name="kite-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("kite sandbox did not start in time")
        if self._startup_error is not None:
            self.stop()
            raise RuntimeError("kite sandbox failed to start") from self._startup_error
        if self._postbacks is not None:
            self._postbacks.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and release the ports; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._request_exit)
        if thread is not None:
            thread.join(timeout)
        if self._postbacks is not None:
            self._postbacks.stop()
        self.hub.bind(None)

    def __enter__(self) -> KiteSandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _request_exit(self) -> None:
        for server in self._servers:
            server.should_exit = True

    def _run(self, sockets: list[socket.socket]) -> None:
        try:
            asyncio.run(self._serve(sockets))
        except BaseException as exc:
            self._startup_error = exc
            log.exception("kite sandbox stopped with an error")
        finally:
            for sock in sockets:
                sock.close()
            self._ready.set()

    async def _serve(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop

        def schedule(delay: float, callback: Callable[[], None]) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.call_later, delay, callback)

        self.exchange.set_scheduler(schedule)
        self.hub.bind(loop)
        self._servers = [
            uvicorn.Server(
                uvicorn.Config(
                    self._app,
                    http="h11",
                    ws="websockets-sansio",
                    lifespan="off",
                    log_config=None,
                    log_level="warning",
                    access_log=False,
                    proxy_headers=False,
                    timeout_graceful_shutdown=1,
                )
            )
            for _ in sockets
        ]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, sockets, strict=True)
        ]
        clock = asyncio.create_task(self._market_clock())
        try:
            while not all(server.started for server in self._servers):
                if any(task.done() for task in tasks):
                    break
                await asyncio.sleep(0.005)
            self._ready.set()
            await asyncio.gather(*tasks)
        finally:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock

    async def _market_clock(self) -> None:
        interval = self.config.tick_interval
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                self.exchange.step_market()
            except Exception:
                log.exception("sandbox market step failed")

    def _on_order_event(self, event: OrderEvent) -> None:
        if event.transient and not self.config.postback_transient_statuses:
            return
        user_id, app_id = self.config.user_id, self.config.app_id
        if self._postbacks is not None:
            self._postbacks.submit(
                order_update_payload(event, user_id=user_id, app_id=app_id, api_secret=self.api_secret)
            )
        # WebSocket order updates carry the same body with a blank checksum.
        self.hub.notify_order(order_update_payload(event, user_id=user_id, app_id=app_id, api_secret=None))

    @property
    def login_url(self) -> str:
        """The sandbox's stand-in for kite.zerodha.com/connect/login (KiteConnect.login_url ignores root)."""
        return f"{self.root}/connect/login?v=3&api_key={self.api_key}"

    def issue_request_token(self) -> str:
        """What a successful browser login hands the redirect URL."""
        return self.sessions.issue_request_token()

    def create_session(self) -> str:
        """An access token without the login round trip."""
        return self.sessions.issue_access_token().token

    def expire_token(self, access_token: str | None = None) -> int:
        """Invalidate one access token (or all): later calls get 403 TokenException."""
        return self.sessions.revoke(access_token)

    def drop_next_order_response(self, count: int = 1) -> None:
        """Accept the next `count` order placements but close the connection instead of replying."""
        self.faults.drop_next_order_responses(count)

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        method: str | None = None,
        path: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `count` matching API calls with `status` and Kite's error body for it."""
        self.faults.fail_next(count, status, message=message, method=method, path_prefix=path)

    def reject_next_order(self, message: str = "Order rejected by the sandbox.") -> None:
        """Accept the next placement, then REJECT it at the RMS stage with `message`."""
        self.exchange.reject_next_order(message)

    def partial_fill_next(self, quantity: int, remainder: Remainder = "rest") -> None:
        """Fill only `quantity` of the next order at first; the rest then rests OPEN ("rest"),
        is cancelled ("cancel"), or fills shortly after ("fill")."""
        self.exchange.partial_fill_next(quantity, remainder)

    def set_price(self, instrument: str | int, price: Decimal | str | int, *, hold: bool = True) -> None:
        """Trade the instrument at `price` now; with `hold` the random walk leaves it there."""
        self.exchange.set_price(instrument, Decimal(price), hold=hold)

    def release_price(self, instrument: str | int) -> None:
        self.exchange.release_price(instrument)

    def price(self, instrument: str | int) -> Decimal:
        return self.exchange.price(instrument)

    def step_market(self, steps: int = 1) -> None:
        for _ in range(steps):
            self.exchange.step_market()

    def orders(self, tag: str | None = None) -> list[dict[str, Any]]:
        """Every order in the book (latest state), optionally only those with `tag`."""
        return self.exchange.orders(tag)

    def order(self, order_id: str) -> dict[str, Any]:
        return self.exchange.order(order_id)

    def fill_order(
        self, order_id: str, quantity: int | None = None, price: Decimal | str | None = None
    ) -> None:
        """Execute (part of) a resting order now, at `price` or the current price."""
        self.exchange.fill(order_id, quantity, None if price is None else Decimal(price))

    def wait_for_order(
        self,
        order_id: str,
        statuses: Collection[str] = FINAL_STATUSES,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Poll the book until the order reaches one of `statuses`; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.exchange.order(order_id)
            if snapshot["status"] in statuses:
                return snapshot
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"order {order_id} is {snapshot['status']}, wanted one of {sorted(statuses)}"
                )
            time.sleep(0.005)

    @property
    def postbacks(self) -> list[PostbackDelivery]:
        """Postbacks attempted so far, in order."""
        return [] if self._postbacks is None else self._postbacks.deliveries

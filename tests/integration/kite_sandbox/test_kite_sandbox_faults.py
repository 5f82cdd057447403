from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import sandbox_orders
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig

place = functools.partial(sandbox_orders.place, tradingsymbol="SBIN")


def test_place_order_when_connection_dropped_before_reply_then_client_errors_and_exactly_one_order_exists(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.drop_next_order_response()

    with pytest.raises(requests.exceptions.ConnectionError):
        place(kite, tag="once1")

    (order,) = sandbox.orders(tag="once1")
    assert sandbox.wait_for_order(order["order_id"])["status"] == "COMPLETE"
    assert [o["order_id"] for o in kite.orders()] == [order["order_id"]]
    assert place(kite, tag="once2")  # the next placement is answered normally


def test_api_call_when_next_call_forced_to_500_then_general_exception_once(
    kite: Any, sandbox: KiteSandbox
) -> None:
    sandbox.fail_next(1, 500, path="/orders")

    with pytest.raises(kex.GeneralException) as raised:
        kite.orders()

    assert raised.value.code == 500
    assert kite.orders() == []


def test_place_order_when_forced_429_then_network_exception_and_no_order(
    kite: Any, sandbox: KiteSandbox
) -> None:
    sandbox.fail_next(2, 429, method="POST", path="/orders")

    for _ in range(2):
        with pytest.raises(kex.NetworkException) as raised:
            place(kite)
        assert raised.value.code == 429

    assert sandbox.orders() == []
    assert place(kite)


class PostbackReceiver:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with received.arrived:
                    received.bodies.append(json.loads(body))
                    received.arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/postback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, status: str, timeout: float = 5.0) -> dict[str, Any]:
        with self.arrived:
            self.arrived.wait_for(lambda: any(b["status"] == status for b in self.bodies), timeout)
            return next(b for b in self.bodies if b["status"] == status)


@pytest.fixture
def receiver() -> Iterator[PostbackReceiver]:
    receiver = PostbackReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_postback_when_order_completes_then_receiver_gets_documented_payload_with_valid_checksum(
    receiver: PostbackReceiver, fast_config: SandboxConfig
) -> None:
    secret = "postback-secret"
    with KiteSandbox("pbkey", secret, config=fast_config, postback_url=receiver.url) as sandbox:
        kite: Any = KiteConnect("pbkey", root=sandbox.root, disable_ssl=True)
        kite.generate_session(sandbox.issue_request_token(), api_secret=secret)
        sandbox.set_price("NSE:SBIN", "801.5")
        order_id = place(kite, quantity=4, tag="pb1")

        body = receiver.wait_for("COMPLETE")

    expected = hashlib.sha256(f"{body['order_id']}{body['order_timestamp']}{secret}".encode()).hexdigest()
    assert body["checksum"] == expected
    assert (body["order_id"], body["filled_quantity"], body["average_price"]) == (order_id, 4, 801.5)
    assert body["user_id"] == body["placed_by"] == "AB1234"
    assert (body["tag"], body["unfilled_quantity"]) == ("pb1", 0)
    assert len(body["order_timestamp"]) == 19
    assert [b["status"] for b in receiver.bodies] == ["OPEN", "COMPLETE"]
    assert {"app_id", "exchange_order_id", "instrument_token", "market_protection", "guid"} <= set(body)


def test_control_api_over_http_when_used_then_drives_prices_faults_and_order_listing(
    sandbox: KiteSandbox, kite: Any
) -> None:
    control = f"{sandbox.root}/_sandbox"
    assert requests.post(f"{control}/price", json={"instrument": "NSE:SBIN", "price": "812.4"}, timeout=5).ok
    assert kite.ltp("NSE:SBIN")["NSE:SBIN"]["last_price"] == 812.4

    assert requests.post(f"{control}/fail_next", json={"count": 1, "status": 503}, timeout=5).ok
    with pytest.raises(kex.NetworkException):
        kite.positions()

    order_id = place(kite, tag="http1")
    listed = requests.get(f"{control}/orders", params={"tag": "http1"}, timeout=5).json()
    assert [o["order_id"] for o in listed] == [order_id]

    assert requests.post(f"{control}/expire_token", json={}, timeout=5).json() == {"expired": 1}
    with pytest.raises(kex.TokenException):
        kite.orders()

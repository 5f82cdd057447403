from __future__ import annotations

import subprocess
import sys
from typing import Any

import requests
from kiteconnect import KiteConnect


def test_module_entry_point_when_started_then_prints_urls_and_serves_the_api() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "alphapanda.kite_sandbox", "--port", "0", "--api-key", "clikey"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        rest = process.stdout.readline().split()[-1]
        ws = process.stdout.readline().split()[-1]
        assert rest.startswith("http://127.0.0.1:") and ws.startswith("ws://127.0.0.1:")

        login = requests.get(f"{rest}/connect/login", params={"api_key": "clikey", "v": "3"}, timeout=5)
        client: Any = KiteConnect("clikey", root=rest, disable_ssl=True)
        client.generate_session(login.json()["data"]["request_token"], api_secret="sandbox_api_secret")
        assert {row["tradingsymbol"] for row in client.instruments("NSE")} >= {"INFY", "RELIANCE", "TCS"}
    finally:
        process.terminate()
        assert process.wait(10) == 0

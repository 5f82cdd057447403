"""`alphapanda run --api-port`: the read API served by the run itself, as a user queries it."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from typing import Any

from test_run_robustness import _no_traceback, _one_line, _run, _wait_for, env  # noqa: F401 (a fixture)


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_run_when_api_port_given_then_the_brokers_positions_are_read_over_http_while_it_trades(
    env: dict[str, str],  # noqa: F811
) -> None:
    proc = _run(["--duration", "12", "--api-port", "0"], env)
    assert proc.stdout is not None
    url = ""
    for line in proc.stdout:
        if found := re.search(r"read API (http://127\.0\.0\.1:\d+)/brokers", line):
            url = found.group(1)
            break
    assert url, "the run should print the API's address"
    traded: dict[str, Any] = {}

    def trades_seen() -> bool:
        status, body = _get(url + "/brokers/paper")
        if status == 200 and body["trades"] > 0:
            traded.update(body)
            return True
        assert status in (200, 503), body  # 503 only while the run starts
        return False

    _wait_for(trades_seen, 30, "the paper broker's first trades in the API")
    status, positions = _get(url + "/brokers/paper/positions")
    unknown, _ = _get(url + "/brokers/zerodha")
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, out + err
    assert status == 200 and traded["state"] == "ACTIVE"
    assert all(p["instrument"].startswith("NSE:") for p in positions["positions"])
    assert unknown == 404
    _no_traceback(err)


def test_run_when_the_api_port_is_taken_then_one_line_exit_2_before_anything_starts(
    env: dict[str, str],  # noqa: F811
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _run(["--duration", "5", "--api-port", str(port)], env)
        out, err = proc.communicate(timeout=30)

    assert proc.returncode == 2, out + err
    line = _one_line(err)
    assert line.startswith(f"alphapanda: --api-port {port}: cannot listen") and "pick another port" in line
    assert "summary:" not in out and "kafka" not in out, out  # no server was started

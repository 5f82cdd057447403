"""`alphapanda run --brokers paper,zerodha --kite-sandbox` as a user runs it: a subprocess that starts
the sandbox, logs in, trades both brokers on the sandbox's ticker and leaves nothing running."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from test_run_command import _ports, _server_pids, _summary


def _brokers(output: str) -> dict[str, dict[str, int]]:
    out = {}
    for line in output.splitlines():
        if match := re.match(r"broker ([a-z0-9-]+): (.*)$", line):
            out[match.group(1)] = {k: int(v) for k, v in (item.split("=") for item in match.group(2).split())}
    return out


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}


def test_run_when_kite_sandbox_for_paper_and_zerodha_then_both_fill_exit_0_and_nothing_left_running() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alphapanda.cli",
            "run",
            "--brokers",
            "paper,zerodha",
            "--kite-sandbox",
            "--duration",
            "20",
            "--no-live",
        ],
        capture_output=True,
        text=True,
        timeout=150,
        env=_env(),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    brokers = _brokers(output)
    assert brokers["paper"]["fills"] > 0 and brokers["zerodha"]["fills"] > 0, output
    assert brokers["zerodha"]["orders"] > 0
    totals = _summary(output)
    assert totals["ticks"] > 0 and totals["dead_lettered"] == 0 and totals["failed"] == 0
    assert totals["fills"] == brokers["paper"]["fills"] + brokers["zerodha"]["fills"]
    assert "differ from Kite" not in output  # the start-of-run reconciliation found the books in line
    sandbox = re.search(r"Kite sandbox http://127\.0\.0\.1:(\d+)\s+ticker ws://127\.0\.0\.1:(\d+)", output)
    assert sandbox, output
    assert not _listening(int(sandbox.group(1))) and not _listening(int(sandbox.group(2)))
    assert _server_pids(_ports(output)) == []


def test_run_when_kite_sandbox_without_a_zerodha_broker_then_one_line_hint_and_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alphapanda.cli", "run", "--brokers", "paper", "--kite-sandbox"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--brokers paper,zerodha" in result.stderr

"""`alphapanda run` as a user runs it: a subprocess, embedded servers, a clean exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


def _server_pids(ports: set[str]) -> list[int]:
    """PIDs of any process whose command line names one of `ports` (the servers the run started)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ("tansu" in cmdline or "redis-server" in cmdline) and any(p in cmdline for p in ports):
            found.append(int(proc.name))
    return found


def _ports(output: str) -> set[str]:
    match = re.search(r"kafka 127\.0\.0\.1:(\d+)\s+redis redis://127\.0\.0\.1:(\d+)/0", output)
    assert match, f"the run did not say which servers it started:\n{output}"
    return {match.group(1), match.group(2)}


def _summary(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if line.startswith("summary: "))
    return {k: int(v) for k, v in (item.split("=") for item in line.removeprefix("summary: ").split())}


def test_run_when_duration_elapses_then_exits_0_with_fills_and_no_servers_left() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alphapanda.cli", "run", "--duration", "15", "--no-live"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    totals = _summary(output)
    assert totals["fills"] > 0, output
    assert totals["signals"] == totals["validated"] + totals["rejected"]
    assert totals["dead_lettered"] == 0
    assert _server_pids(_ports(output)) == []


def test_run_when_interrupted_then_stops_cleanly_and_stops_its_servers() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "alphapanda.cli", "run", "--no-live", "--rate", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")},
    )
    time.sleep(10)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert _summary(output)["ticks"] > 0
    assert _server_pids(_ports(output)) == []


def test_run_when_an_argument_is_bad_then_one_clear_line_and_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alphapanda.cli", "run", "--brokers", "Paper"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "ALPHAPANDA_BROKERS" in result.stderr and "lowercase" in result.stderr


def test_run_when_killed_outright_then_its_servers_die_with_it() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "alphapanda.cli", "run", "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")},
    )
    assert proc.stdout is not None
    ports = _ports(proc.stdout.readline())
    assert _server_pids(ports), "the servers should be running"
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 10
    while _server_pids(ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _server_pids(ports) == []


def test_replay_when_run_beside_a_live_run_then_the_replay_broker_trades_the_recorded_ticks(
    tmp_path: Path,
) -> None:
    strategies = tmp_path / "strategies.yaml"
    strategies.write_text(
        "strategies:\n  - name: fast\n    kind: ema_crossover\n    instruments: [RELIANCE, INFY, TCS]\n"
        "    brokers: [paper, paper-replay]\n    params: {fast: 3, slow: 8, quantity: 1}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # where the run says where its servers are
    cli = [sys.executable, "-m", "alphapanda.cli"]
    proc = subprocess.Popen(
        [*cli, "run", "--no-live", "--brokers", "paper,paper-replay", "--strategies", str(strategies)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "alphapanda-run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(6)  # record a few seconds of live ticks
        replay = subprocess.run(
            [*cli, "replay", "--from", "0"], capture_output=True, text=True, timeout=120, env=env
        )
        time.sleep(4)  # let the pipeline trade the replayed ticks
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    match = re.search(
        r"replayed ([\d,]+) ticks from market\.equity\.ticks for broker paper-replay", replay.stdout
    )
    assert match and int(match.group(1).replace(",", "")) > 0, replay.stdout + replay.stderr
    assert proc.returncode == 0, output
    replayed = re.search(r"^broker paper-replay: signals=(\d+) .*fills=(\d+)", output, re.MULTILINE)
    assert replayed and int(replayed.group(1)) > 0 and int(replayed.group(2)) > 0, output


def test_run_when_a_users_strategy_fails_then_its_alerts_are_counted_and_the_latest_is_shown(
    tmp_path: Path,
) -> None:
    (tmp_path / "broken_strategy.py").write_text(
        "class Broken:\n"
        "    def on_tick(self, state, tick):\n"
        "        raise ZeroDivisionError('no range yet')\n"
    )
    strategies = tmp_path / "strategies.yaml"
    strategies.write_text(
        "strategies:\n  - name: broken\n    kind: broken_strategy:Broken\n"
        "    instruments: [RELIANCE]\n    brokers: [paper]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    command = [sys.executable, "-m", "alphapanda.cli", "run", "--duration", "12", "--no-live"]
    result = subprocess.run(
        [*command, "--strategies", str(strategies), "--rate", "200"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env | {"PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    totals = _summary(output)
    # One instrument failing on every tick: alerted on its 1st, 10th, 100th, ... failure.
    assert totals["alerts"] >= 2, output
    assert totals["signals"] == 0 and totals["dead_lettered"] == 0, output
    latest = re.search(r"^(\d+) alerts; the latest: (.*)$", output, re.MULTILINE)
    assert latest, output
    assert int(latest.group(1)) == totals["alerts"]
    assert latest.group(2).startswith("strategy 'broken' failed again on NSE:RELIANCE at "), output
    assert "ZeroDivisionError: no range yet" in latest.group(2), output

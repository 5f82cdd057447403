"""`alphapanda run` when things go wrong: signals at bad moments, a second run, bad settings, a
server dying. Each test runs the real command in a subprocess, with the servers it starts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "alphapanda.cli"]
SERVERS = ("tansu", "redis-server")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's run: no ALPHAPANDA_* of ours, a run-info directory of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    clean["XDG_RUNTIME_DIR"] = str(tmp_path)
    return clean


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _kill_leftover_runs() -> Iterator[None]:
    """A failing test must not leave its run (and so its servers) running for the next ones."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _run(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*CLI, "run", "--no-live", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _STARTED.append(proc)
    return proc


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> Iterator[int]:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                # Field 4 of stat is the parent PID; the command (field 2) is in parentheses.
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                yield int(proc.name)


def _server_children(pid: int) -> list[int]:
    """The broker and redis-server processes `pid` has started and that are still running."""
    found = []
    for child in _children(pid):
        cmdline = _cmdline(child)
        state = _state(child)
        if any(s in cmdline for s in SERVERS) and state not in ("Z", ""):
            found.append(child)
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if _state(p) not in ("Z", "")]


def _wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _assert_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(pids) == [], f"servers left running: {[_cmdline(p) for p in _alive(pids)]}"


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


def _one_line(err: str) -> str:
    """stderr without librdkafka's own log lines (`%3|...`), which must be exactly one line."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("%")]
    assert len(lines) == 1, err
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_when_signalled_while_its_servers_start_then_stops_cleanly_with_a_summary(
    env: dict[str, str], signum: signal.Signals
) -> None:
    proc = _run([], env)
    # The broker process appearing means the run is starting its servers, not running yet.
    _wait_for(lambda: _server_children(proc.pid), 30, "the broker to start")
    started = _server_children(proc.pid)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    _no_traceback(err)
    assert proc.returncode == 0, out + err
    assert f"stopped by {signum.name} during start-up" in out, out + err
    assert re.search(r"^summary: ticks=0 ", out, re.MULTILINE), out
    _assert_gone(started)


def test_run_when_ctrl_c_twice_then_stops_now_without_a_traceback_and_stops_its_servers(
    env: dict[str, str],
) -> None:
    proc = _run(["--rate", "0"], env)  # as fast as it goes: a backlog to drain
    assert proc.stdout is not None
    proc.stdout.readline()  # the servers are up
    servers = _server_children(proc.pid)
    assert servers
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    out, err = proc.communicate(timeout=30)
    _no_traceback(err)
    assert proc.returncode == 0, out + err
    assert "SIGINT again: stopping now" in err, err
    assert time.monotonic() - stopped < 10, "a second Ctrl-C should not wait for the drain"
    assert re.search(r"^summary: ticks=[1-9]", out, re.MULTILINE), out
    _assert_gone(servers)


def test_run_when_two_start_on_one_state_directory_then_one_runs_and_the_other_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Both at once: only an atomic claim of the run-info file lets just one of them through.
    procs = [_run(["--duration", "3"], env), _run(["--duration", "3"], env)]
    outputs = [p.communicate(timeout=60) for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    _, _, refused = next(r for r in results if r[0] == 2)
    line = _one_line(refused)
    assert "another `alphapanda run` (pid" in line and "XDG_RUNTIME_DIR" in line, line
    assert not (tmp_path / "alphapanda-run.json").exists(), "the run that ran should remove its file"


def test_run_when_the_run_info_file_names_a_dead_process_then_it_runs(
    env: dict[str, str], tmp_path: Path
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "alphapanda-run.json").write_text(
        json.dumps({"pid": dead.pid, "bootstrap_servers": "127.0.0.1:1", "redis_url": "", "brokers": []})
    )
    proc = _run(["--duration", "1"], env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert re.search(r"^summary: ", out, re.MULTILINE), out
    assert not (tmp_path / "alphapanda-run.json").exists()


@pytest.mark.parametrize(
    ("setting", "args", "named"),
    [
        ("ALPHAPANDA_REDIS__URL=redis://127.0.0.1:{port}/0", [], "ALPHAPANDA_REDIS__URL"),
        ("ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:{port}", [], "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS"),
        ("", ["--replay", "{tmp}/missing.csv"], "no such file"),
        ("", ["--replay", "{tmp}"], "is a folder"),
        ("", ["--replay", "{tmp}/not-ticks.csv"], "missing columns"),
    ],
    ids=["redis-unreachable", "kafka-unreachable", "replay-missing", "replay-folder", "replay-not-ticks"],
)
def test_run_when_configured_wrong_then_one_line_exit_2_and_nothing_started(
    env: dict[str, str], tmp_path: Path, setting: str, args: list[str], named: str
) -> None:
    (tmp_path / "not-ticks.csv").write_text("when,what\n1,2\n")
    if setting:
        key, value = setting.format(port=_free_port()).split("=", 1)
        env[key] = value
    proc = _run([a.format(tmp=tmp_path) for a in args], env)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, out + err
    line = _one_line(err)
    assert line.startswith("alphapanda: ") and named in line, line
    assert "unset" in line or "alphapanda simulate" in line, "the line should say how to fix it"
    assert "summary:" not in out, out


@pytest.mark.parametrize(("server", "label"), [("redis-server", "redis-server"), ("tansu", "Kafka broker")])
def test_run_when_an_embedded_server_dies_then_it_says_which_stops_and_exits_1(
    env: dict[str, str], server: str, label: str
) -> None:
    proc = _run([], env)
    assert proc.stdout is not None
    proc.stdout.readline()  # the servers are up
    servers = _server_children(proc.pid)
    victim = next(p for p in servers if server in _cmdline(p))
    time.sleep(1)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - killed < 15, "the run should notice a dead server within seconds"
    _no_traceback(err)
    assert proc.returncode == 1, out + err
    line = _one_line(err)
    assert label in line and f"pid {victim}" in line and "SIGKILL" in line, line
    assert re.search(r"^summary: ", out, re.MULTILINE), out
    _assert_gone(servers)

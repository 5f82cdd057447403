"""A function served by the real functions-framework CLI, as Knative runs it (test support)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from alphapanda.runtime.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


class FunctionServer:
    """`functions-framework --source functions/<name>/main.py --target handle` on a free port."""

    def __init__(self, name: str, env: dict[str, str], signature: str = "cloudevent") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._proc = subprocess.Popen(
            [
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
                str(self.port),
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
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
            out, _ = self._proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        return out.decode() if out else ""

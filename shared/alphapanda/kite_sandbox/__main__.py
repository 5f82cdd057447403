"""`python -m alphapanda.kite_sandbox --port P`: run the sandbox standalone until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from .config import SandboxConfig
from .server import KiteSandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alphapanda.kite_sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on (0.0.0.0: every one)")
    parser.add_argument("--port", type=int, default=0, help="REST port (0 = any free port)")
    parser.add_argument(
        "--ws-port", type=int, default=None, help="ticker port (default: --port + 1, or free)"
    )
    parser.add_argument("--api-key", default="sandbox_api_key")
    parser.add_argument("--api-secret", default="sandbox_api_secret")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postback-url", default=None)
    parser.add_argument("--redirect-url", default=None, help="where /connect/login sends the request_token")
    parser.add_argument("--tick-interval", type=float, default=1.0, help="seconds between market ticks")
    args = parser.parse_args(argv)

    ws_port = args.ws_port if args.ws_port is not None else (args.port + 1 if args.port else 0)
    sandbox = KiteSandbox(
        args.api_key,
        args.api_secret,
        seed=args.seed,
        postback_url=args.postback_url,
        port=args.port,
        ws_port=ws_port,
        redirect_url=args.redirect_url,
        config=SandboxConfig(tick_interval=args.tick_interval),
        host=args.host,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with sandbox:
        print(f"Kite sandbox REST root:   {sandbox.root}", flush=True)
        print(f"Kite sandbox ticker root: {sandbox.ws_root}", flush=True)
        print(f"api_key={sandbox.api_key} api_secret={sandbox.api_secret}", flush=True)
        print(f"login (issues a request_token): {sandbox.login_url}", flush=True)
        print(f"controls: {sandbox.root}/_sandbox/...", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Zerodha commands: `alphapanda login`, `alphapanda instruments sync`, `alphapanda reconcile`,
`alphapanda kite-sandbox`.

`register(subparsers)` adds them to the `alphapanda` parser (`reconcile` only if the parser has
none yet); `run(args)` runs one and returns its exit code, or None when the parsed command is
not one of these. `reconcile --broker B` of a zerodha-kind broker compares the books with
Kite's positions, whichever parser defined the command, so it composes with a fills-vs-books
check of the caller's own. Settings come from `ALPHAPANDA_*`; every command needs
ALPHAPANDA_REDIS__URL, because the Kite session lives in Redis for every function to read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from alphapanda.cli_args import MAX_PORT, broker_name, http_url, ipv4_address, port, positive_number
from alphapanda.config import ConfigError, Settings, load_settings
from alphapanda.events import IST
from alphapanda.topics import broker_kind

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: Any) -> None:
    """Add `login`, `instruments sync` and `reconcile` to the `alphapanda` subcommands."""
    login = subparsers.add_parser(
        "login",
        help="log in to Kite for the day and store the access token in Redis",
        description="Print the Kite login URL, take the request_token (argument, or prompted; the whole "
        "redirect URL works too), exchange it for an access token and keep that in Redis until 06:00 IST. "
        "A broker HALTED because its token expired is resumed.",
    )
    login.add_argument("request_token", nargs="?", help="request_token from the redirect URL (or the URL)")
    login.add_argument(
        "--broker", type=broker_name, default="zerodha", help="zerodha broker (default: zerodha)"
    )
    login.add_argument(
        "--sandbox",
        action="store_true",
        help="take the request_token from the Kite sandbox at ALPHAPANDA_KITE__ROOT (no browser)",
    )
    login.set_defaults(zerodha_command=_login)

    instruments = subparsers.add_parser("instruments", help="the instrument master in Redis")
    actions = instruments.add_subparsers(dest="instruments_command", required=True)
    sync = actions.add_parser(
        "sync",
        help="download Kite's instrument dump into Redis",
        description="Download Kite's daily instrument dump with the stored session and replace the master "
        "in Redis (token -> symbol, exchange, segment, lot size, tick size).",
    )
    sync.add_argument(
        "--exchange", action="append", default=[], help="only this exchange (repeatable; default: all)"
    )
    sync.add_argument("--broker", type=broker_name, default="zerodha", help="whose Kite session to use")
    sync.set_defaults(zerodha_command=_instruments_sync)

    sandbox = subparsers.add_parser(
        "kite-sandbox",
        help="run a local Kite Connect sandbox (REST and ticker) until Ctrl-C",
        description="Serve Kite Connect v3 HTTP and the KiteTicker protocol (on loopback unless --host "
        "says otherwise), trading the configured instrument list (ALPHAPANDA_INSTRUMENTS_FILE, default the "
        "shipped NSE list), and print the roots and the api key and secret to use. It serves the api key "
        "and secret in ALPHAPANDA_KITE__API_KEY / __API_SECRET when both are set, else a made-up pair. The "
        "same as `python -m alphapanda.kite_sandbox`, with the pipeline's instruments.",
    )
    sandbox.add_argument(
        "--host",
        type=ipv4_address,
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    sandbox.add_argument("--port", type=port, default=0, help="REST port (0: any free port)")
    sandbox.add_argument("--ws-port", type=port, help="ticker port (default: --port + 1, or any free port)")
    sandbox.add_argument(
        "--postback-url", type=http_url, help="where to POST order updates, as Kite does (default: nowhere)"
    )
    sandbox.add_argument(
        "--redirect-url", type=http_url, help="where the login page sends the request_token (default: shown)"
    )
    sandbox.add_argument("--seed", type=int, default=0, help="random-walk seed")
    sandbox.add_argument(
        "--tick-interval", type=positive_number, default=1.0, help="seconds between market ticks"
    )
    sandbox.add_argument(
        "--market-clock",
        action="store_true",
        help="started outside NSE hours, run the sandbox's clock from the latest session open (as "
        "`alphapanda run --kite-sandbox` does), so strategies trade at night; default: the wall clock",
    )
    sandbox.set_defaults(zerodha_command=_kite_sandbox)

    if "reconcile" in subparsers.choices:
        return
    reconcile = subparsers.add_parser(
        "reconcile",
        help="compare the portfolio's positions with the broker's",
        description="Compare every strategy's book with Kite's net positions; differences are printed, "
        "sent as an Alert to {broker}.alerts, and make the exit code 1.",
    )
    reconcile.add_argument(
        "--broker", type=broker_name, required=True, help="broker to reconcile, e.g. zerodha"
    )
    reconcile.set_defaults(zerodha_command=_reconcile)


def run(args: argparse.Namespace) -> int | None:
    """Run the parsed command if it is one of ours; return its exit code, else None."""
    handler: Handler | None = getattr(args, "zerodha_command", None)
    if handler is None and getattr(args, "command", None) == "reconcile":
        handler = _reconcile
    if handler is None:
        return None
    if handler is _reconcile and not _is_zerodha(args.broker):
        return None
    from kiteconnect import exceptions as kex

    from alphapanda.brokers.zerodha.session import LoginFailed, SessionError

    try:
        return handler(args)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except (SessionError, LoginFailed) as exc:
        return _fail(str(exc), 1)
    except kex.TokenException:
        return _fail("Kite refused the stored session: run `alphapanda login`", 1)
    except kex.KiteException as exc:
        return _fail(f"Kite answered {type(exc).__name__}: {exc}", 1)


def _is_zerodha(broker: str) -> bool:
    try:
        return broker_kind(broker) == "zerodha"
    except ValueError:
        return False


def _fail(message: str, code: int) -> int:
    print(f"alphapanda: {message}", file=sys.stderr)
    return code


def _settings_with_redis(command: str) -> tuple[Settings, Any]:
    import redis

    settings = load_settings()
    if not settings.redis.url:
        raise ConfigError(
            f"alphapanda {command} needs ALPHAPANDA_REDIS__URL: the Kite session is kept in Redis, "
            "where every function reads it"
        )
    if not settings.kite.api_key:
        raise ConfigError(f"alphapanda {command} needs ALPHAPANDA_KITE__API_KEY")
    return settings, redis.Redis.from_url(settings.redis.url)


def _login(args: argparse.Namespace) -> int:
    from alphapanda.brokers.zerodha.client import login_url
    from alphapanda.brokers.zerodha.session import LoginFailed, complete_login

    settings, client = _settings_with_redis("login")
    if not settings.kite.api_secret.get_secret_value():
        raise ConfigError("alphapanda login needs ALPHAPANDA_KITE__API_SECRET")
    token = args.request_token
    if args.sandbox:
        if token:
            raise ConfigError("give a request_token or --sandbox, not both")
        token = _sandbox_request_token(settings)
    else:
        print("Log in to Kite at this URL, then give the request_token from the page it redirects to:")
        print(f"  {login_url(settings.kite)}")
    if not token:
        try:
            token = input("request_token (or the redirect URL): ")
        except EOFError:
            raise LoginFailed("no request token given") from None
    result = complete_login(token, settings.kite, client, args.broker)
    until = result.session.expires_at.astimezone(IST)
    print(
        f"logged in as {result.session.user_id} for {args.broker}; "
        f"session stored until {until:%Y-%m-%d %H:%M} IST"
    )
    if result.resumed:
        print(f"{args.broker} had been HALTED by the expired token and is ACTIVE again")
    return 0


def _sandbox_request_token(settings: Settings) -> str:
    """A request token from the Kite sandbox the settings point at (`sandbox_request_token`)."""
    from alphapanda.brokers.zerodha.session import LoginFailed
    from alphapanda.runtime.sandboxed import SandboxUnavailable, sandbox_request_token

    root = settings.kite.root
    if root.rstrip("/") == type(settings.kite).model_fields["root"].default:
        raise ConfigError(
            "--sandbox takes the request token from a Kite sandbox: set ALPHAPANDA_KITE__ROOT to the "
            "sandbox's REST root (alphapanda kite-sandbox prints it)"
        )
    try:
        return sandbox_request_token(root)
    except SandboxUnavailable as exc:
        raise LoginFailed(str(exc)) from None


def _kite(settings: Settings, client: Any, broker: str) -> Any:
    from alphapanda.brokers.zerodha.client import kite_client
    from alphapanda.brokers.zerodha.session import SessionStore

    return kite_client(settings.kite, SessionStore(client, broker).access_token())


def _instruments_sync(args: argparse.Namespace) -> int:
    from alphapanda.brokers.zerodha import keys
    from alphapanda.brokers.zerodha.instruments import InstrumentMaster, sync_instruments

    settings, client = _settings_with_redis("instruments sync")
    exchanges = [e.upper() for e in args.exchange]
    count = sync_instruments(_kite(settings, client, args.broker), InstrumentMaster(client), exchanges)
    scope = ", ".join(exchanges) if exchanges else "all exchanges"
    print(f"synced {count} instruments ({scope}) into Redis {keys.INSTRUMENTS}")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from alphapanda.brokers.zerodha.instruments import InstrumentMaster
    from alphapanda.brokers.zerodha.reconcile import reconcile
    from alphapanda.bus.kafka import EventPublisher
    from alphapanda.state.store import RedisStateStore

    settings, client = _settings_with_redis("reconcile")
    master = InstrumentMaster(client)

    def names(token: int) -> tuple[str, str]:
        record = master.get(token)
        return (record.tradingsymbol, record.exchange) if record else ("", "")

    store = RedisStateStore(client, settings.redis.claim_ttl_s)
    result = reconcile(store, _kite(settings, client, args.broker), args.broker, names=names)
    if not result.breaks:
        print(f"{args.broker}: the books match Kite's positions")
        return 0
    print(f"{args.broker}: {len(result.breaks)} position(s) differ from Kite's")
    for b in result.breaks:
        print(f"  {b.label:<28} books {b.expected:>8}  kite {b.actual:>8}")
    if result.alert is not None and settings.kafka.bootstrap_servers:
        publisher = EventPublisher(settings.kafka.bootstrap_servers, settings.kafka.ack_timeout_s)
        publisher.publish([result.alert])
        publisher.close()
        print(f"alert sent to {result.alert.topic}")
    else:
        print("alert not sent: ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS is not set")
    return 1


def _kite_sandbox(args: argparse.Namespace) -> int:
    import signal
    import threading
    from types import FrameType

    from alphapanda.domain.instruments import load_instruments
    from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig
    from alphapanda.runtime.sandboxed import (
        SANDBOX_API_KEY,
        SANDBOX_API_SECRET,
        market_clock,
        sandbox_instruments,
    )

    settings = load_settings()
    instruments = load_instruments(settings.instruments_file)
    ws_port = args.ws_port if args.ws_port is not None else (args.port + 1 if args.port else 0)
    if ws_port > MAX_PORT:
        raise ConfigError(f"--port {args.port} leaves no next port for the ticker: pass --ws-port too")
    if ws_port and ws_port == args.port:
        raise ConfigError(
            f"--port and --ws-port are both {ws_port}: the REST API and the ticker need a port each"
        )
    api_key, api_secret = settings.kite.api_key, settings.kite.api_secret.get_secret_value()
    if bool(api_key) != bool(api_secret):
        raise ConfigError(
            "set both ALPHAPANDA_KITE__API_KEY and ALPHAPANDA_KITE__API_SECRET for the sandbox to serve, "
            "or neither"
        )
    clock = market_clock() if args.market_clock else None
    sandbox = KiteSandbox(
        api_key or SANDBOX_API_KEY,
        api_secret or SANDBOX_API_SECRET,
        instruments=sandbox_instruments(instruments),
        seed=args.seed,
        clock=clock,
        port=args.port,
        ws_port=ws_port,
        config=SandboxConfig(tick_interval=args.tick_interval),
        host=args.host,
        postback_url=args.postback_url,
        redirect_url=args.redirect_url,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with sandbox:
        print(f"Kite sandbox REST root:   {sandbox.root}  (ALPHAPANDA_KITE__ROOT)", flush=True)
        print(f"Kite sandbox ticker root: {sandbox.ws_root}  (ALPHAPANDA_KITE__WS_ROOT)", flush=True)
        if clock is not None:
            print(f"Kite sandbox market clock starts at {clock():%Y-%m-%d %H:%M:%S} IST", flush=True)
        if api_key:
            # The operator's own secret stays out of the output (a pod's log is widely readable).
            print(
                f"api_key={sandbox.api_key} and its secret: from ALPHAPANDA_KITE__API_KEY / __API_SECRET",
                flush=True,
            )
        else:
            print(
                f"api_key={sandbox.api_key} api_secret={sandbox.api_secret}  "
                "(ALPHAPANDA_KITE__API_KEY, ALPHAPANDA_KITE__API_SECRET)",
                flush=True,
            )
        if args.host == "0.0.0.0":
            print(
                "listening on every interface (0.0.0.0); the roots above are its loopback address", flush=True
            )
        if args.postback_url:
            print(f"order updates are posted to {args.postback_url}", flush=True)
        print(f"{len(instruments)} instruments; login page: {sandbox.login_url}", flush=True)
        print(f"request token without a browser: POST {sandbox.root}/_sandbox/request_token", flush=True)
        print("or log in against it with: alphapanda login --sandbox", flush=True)
        stop.wait()
    print("Kite sandbox stopped", flush=True)
    return 0

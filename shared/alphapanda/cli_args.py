"""Argument types of the `alphapanda` command: a bad value stops it before any work starts.

Each type turns the text of one argument into its value, or raises
`argparse.ArgumentTypeError` with what is wrong and what would do, which argparse prints under
the usage as one line (`alphapanda backtest: error: argument --bar: ...`), with exit code 2.
Checks that need the settings (`config.first_instruments`) raise `ConfigError`, which the
command prints as one line with the same exit code. Checking at parse
time matters most for output files: a backtest or a benchmark that runs for minutes must not
fail at the end because it cannot write its report.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from alphapanda.config import ConfigError
from alphapanda.topics import broker_kind, validate_broker_name

MAX_PORT = 65_535


def _number_text(text: str) -> str:
    """`text` without digit separators: 1_000_000 and 1,000,000 both mean a million."""
    return text.strip().replace("_", "").replace(",", "")


def whole_number(text: str) -> int:
    """A count: a whole number, 1 or more."""
    try:
        value = int(_number_text(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def whole_numbers(text: str) -> list[int]:
    """A comma list of counts, e.g. `1,50` (each 1 or more)."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} names no number: give a comma list such as 1,50")
    return [whole_number(p) for p in parts]


def _finite(text: str) -> float:
    try:
        value = float(_number_text(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def non_negative_number(text: str) -> float:
    """A number, 0 or more (a rate where 0 means as fast as possible)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def positive_number(text: str) -> float:
    """A number more than 0 (a duration, an interval)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: use 0 (any free port) to {MAX_PORT}")
    return value


def ipv4_address(text: str) -> str:
    """An IPv4 address to listen on (the sandbox binds IPv4 sockets)."""
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv4 address: use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None


def http_url(text: str) -> str:
    """An absolute http(s) URL, such as the one Kite posts order updates to."""
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL: e.g. http://localhost:8080/")
    return text


def broker_name(text: str) -> str:
    """A broker's name, of a known kind (`paper`, `paper-2`, `zerodha`, `paper-replay`, ...)."""
    try:
        broker_kind(validate_broker_name(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def existing_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: name a file in it")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def check_tick_file(path: Path, option: str = "--replay") -> None:
    """Raise `ConfigError` (one line) unless `path` is a readable CSV tick file whose first row
    parses. Checked before a run starts anything: the feed would read it only after the servers
    and the pipeline are up, and fail there, in a traceback."""
    from alphapanda.feed import TickFileError, read_ticks_csv

    fix = "name a tick file, or write one with `alphapanda simulate --ticks N --out FILE`"
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder: {fix}")
    try:
        # The generator is dropped at once, which closes the file it has open.
        next(read_ticks_csv(path), None)
    except FileNotFoundError:
        raise ConfigError(f"{option} {path}: no such file: {fix}") from None
    except OSError as exc:
        raise ConfigError(f"{option} {path} cannot be read ({exc.strerror or exc}): {fix}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{option} {path} is not a text CSV file: {fix}") from None
    except TickFileError as exc:
        raise ConfigError(f"{option} {exc}: {fix}") from None


def aware_time(text: str) -> datetime:
    """An ISO 8601 time with its zone (market times are IST: +05:30)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone (e.g. 2026-01-05T09:15:00+05:30)")
    return at


def output_file(*suffixes: str) -> Callable[[str], Path]:
    """A file to write: its folder must exist, and its name end in one of `suffixes` (any if none)."""

    def parse(text: str) -> Path:
        path = Path(text)
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"{text}: name the file {' or '.join(f'*{s}' for s in suffixes)}"
            )
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder: name a file in it")
        folder = path.parent
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: no such folder {folder} (create it first)")
        return path

    return parse


def time_window(start: datetime | None, end: datetime | None) -> str | None:
    """What is wrong with the window [start, end), or None: it must not be empty."""
    if start is not None and end is not None and end <= start:
        return f"--to {end.isoformat()} is not after --from {start.isoformat()}: the window holds no tick"
    return None

"""Where a running `alphapanda run` can be found: so `halt`, `reconcile`, ... reach its servers.

The local runner starts its broker and Redis on free ports; it writes their addresses here
while it runs, and removes the file when it stops. The file is also the runner's claim on its
directory: one `alphapanda run` per file, so `halt` or `trace` never reach the wrong pipeline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from alphapanda.config import ConfigError, Settings


def runinfo_path() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or str(Path.home() / ".alphapanda")
    return Path(base) / "alphapanda-run.json"


@dataclass(frozen=True)
class RunInfo:
    pid: int
    bootstrap_servers: str
    redis_url: str
    brokers: tuple[str, ...]


@contextlib.contextmanager
def _claim_lock(path: Path) -> Iterator[None]:
    """Serialise claims of `path` between processes: checking that its holder is dead and taking
    it over is two steps, and two new runs doing them at once could each remove the other's claim."""
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _holder(path: Path) -> int | None:
    """The PID that claimed `path`, or None if the file is gone or not a run-info file."""
    try:
        pid = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


def claim_runinfo() -> Path:
    """Claim the run-info file for this process before anything starts, or raise `ConfigError`
    (one line: who holds it and how to proceed) while another live run holds it.

    The file is created with O_EXCL, so of two runs starting at once only one gets it. A file
    left by a run that died (its PID is gone) is taken over. The claim names no servers yet:
    `publish_runinfo` adds them once they are up.
    """
    path = runinfo_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _claim_lock(path):
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _holder(path)
                # Our own PID is a run of this process that ended without removing it (none
                # runs two at once): as stale as a dead one.
                if holder is not None and holder != os.getpid() and _alive(holder):
                    raise ConfigError(
                        f"another `alphapanda run` (pid {holder}) is running on this state directory "
                        f"({path}): stop it first (Ctrl-C in its terminal, or kill {holder}), or start "
                        f"this one with its own XDG_RUNTIME_DIR"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: its run is gone
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(asdict(RunInfo(os.getpid(), "", "", ())), fh)
            return path
    raise ConfigError(f"could not claim {path}: remove it if no `alphapanda run` is running")


def publish_runinfo(settings: Settings) -> Path:
    """Write the running servers' addresses into our claim, atomically (a reader never sees half)."""
    path = runinfo_path()
    info = RunInfo(os.getpid(), settings.kafka.bootstrap_servers, settings.redis.url, settings.brokers)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".alphapanda-run-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(info), fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def remove_runinfo() -> None:
    path = runinfo_path()
    if _holder(path) == os.getpid():
        with contextlib.suppress(OSError):
            path.unlink()


def running_brokers() -> tuple[str, ...] | None:
    """The brokers of the running local pipeline, or None when none runs here."""
    try:
        info = RunInfo(**json.loads(runinfo_path().read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return tuple(info.brokers) if _alive(info.pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_endpoints(settings: Settings) -> Settings:
    """Settings with Kafka and Redis set: from the environment, else from the running local pipeline."""
    if settings.kafka.bootstrap_servers and settings.redis.url:
        return settings
    path = runinfo_path()
    try:
        info = RunInfo(**{**json.loads(path.read_text()), "brokers": ()})
    except (OSError, ValueError, TypeError):
        info = None
    if info is None or not _alive(info.pid):
        raise ConfigError(
            "no running pipeline found: start `alphapanda run`, or set ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS "
            "and ALPHAPANDA_REDIS__URL"
        )
    if not info.bootstrap_servers or not info.redis_url:
        raise ConfigError(
            f"the running `alphapanda run` (pid {info.pid}) is still starting its servers: try again in "
            f"a few seconds"
        )
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"bootstrap_servers": settings.kafka.bootstrap_servers or info.bootstrap_servers}
            ),
            "redis": settings.redis.model_copy(update={"url": settings.redis.url or info.redis_url}),
        }
    )

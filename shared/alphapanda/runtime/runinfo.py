"""Where a running `alphapanda run` can be found: so `halt`, `reconcile`, ... reach its servers.

The local runner starts its broker and Redis on free ports; it writes their addresses here
while it runs, and removes the file when it stops.
"""

from __future__ import annotations

import json
import os
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


def write_runinfo(settings: Settings) -> Path:
    path = runinfo_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    info = RunInfo(os.getpid(), settings.kafka.bootstrap_servers, settings.redis.url, settings.brokers)
    path.write_text(json.dumps(asdict(info)))
    return path


def remove_runinfo() -> None:
    path = runinfo_path()
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


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
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"bootstrap_servers": settings.kafka.bootstrap_servers or info.bootstrap_servers}
            ),
            "redis": settings.redis.model_copy(update={"url": settings.redis.url or info.redis_url}),
        }
    )

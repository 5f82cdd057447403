"""Fixtures that start real servers: the embedded Tansu broker and redis-server, on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _own_runinfo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests neither find nor write the file by which commands reach a running `alphapanda run`
    (`runtime/runinfo.py`): a run of the machine's user must not answer a test's `trace` or
    `halt`, nor a test's run be reached by the user's commands."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("runtime")))
    yield
    patch.undo()


@pytest.fixture
def kafka() -> Iterator[EmbeddedKafka]:
    with EmbeddedKafka() as server:
        yield server


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server

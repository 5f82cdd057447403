"""Fixtures that start real servers: the embedded Tansu broker and redis-server, on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def kafka() -> Iterator[EmbeddedKafka]:
    with EmbeddedKafka() as server:
        yield server


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server

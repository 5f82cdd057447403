"""Fixtures for unit tests that look at what telemetry records: spans in memory, or no tracing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from alphapanda import telemetry


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span kept in memory as it ends."""
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing([exporter], batch=False)
    yield exporter
    telemetry.reset_tracing()


@pytest.fixture
def untraced() -> Iterator[None]:
    """Tracing off (metrics are still recorded)."""
    telemetry.configure_tracing([])
    yield
    telemetry.reset_tracing()

"""Sliding-window request limits, as Kite applies per api_key (10 orders/s, 200 orders/min,
quote 1 r/s, other endpoints 10 r/s)."""

from __future__ import annotations

import threading
import time
from collections import deque


class SlidingWindow:
    def __init__(self, limit: int, window: float) -> None:
        if limit <= 0 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window = window
        self._stamps: deque[float] = deque()

    def has_room(self, now: float) -> bool:
        while self._stamps and now - self._stamps[0] >= self.window:
            self._stamps.popleft()
        return len(self._stamps) < self.limit

    def record(self, now: float) -> None:
        self._stamps.append(now)


class RateLimiter:
    """Every window must have room for a request to pass; refused requests are not counted."""

    def __init__(self, *windows: SlidingWindow) -> None:
        self._windows = windows
        self._lock = threading.Lock()

    def admit(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if not all(window.has_room(now) for window in self._windows):
                return False
            for window in self._windows:
                window.record(now)
        return True

    @classmethod
    def build(
        cls, per_second: int | None, per_minute: int | None = None, per_day: int | None = None
    ) -> RateLimiter:
        windows: list[SlidingWindow] = []
        if per_second is not None:
            windows.append(SlidingWindow(per_second, 1.0))
        if per_minute is not None:
            windows.append(SlidingWindow(per_minute, 60.0))
        if per_day is not None:
            windows.append(SlidingWindow(per_day, 86_400.0))
        return cls(*windows)

"""HTTP-level fault injection: forced error answers and dropped order replies."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ._common import KiteError, error_for_status


@dataclass(slots=True)
class _ForcedFailure:
    remaining: int
    status: int
    message: str | None
    method: str | None
    path_prefix: str | None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_ForcedFailure] = []
        self._drops = 0

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        message: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
    ) -> None:
        if count <= 0:
            raise ValueError("count must be positive")
        with self._lock:
            self._failures.append(_ForcedFailure(count, status, message, method, path_prefix))

    def drop_next_order_responses(self, count: int) -> None:
        if count <= 0:
            raise ValueError("count must be positive")
        with self._lock:
            self._drops += count

    def forced_failure(self, method: str, path: str) -> KiteError | None:
        with self._lock:
            for failure in self._failures:
                if failure.matches(method, path):
                    failure.remaining -= 1
                    if failure.remaining == 0:
                        self._failures.remove(failure)
                    return error_for_status(failure.status, failure.message)
        return None

    def take_drop(self) -> bool:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return True
        return False

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()
            self._drops = 0

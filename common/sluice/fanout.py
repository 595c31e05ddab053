"""Running a delivery's calls concurrently: at most ``limit`` in flight, no barrier.

A pool of ``limit`` threads takes the next task as soon as one finishes, so one slow call
never holds back the others. Exceptions come back as values: one record's trouble must not
fail its delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ThreadFanOut:
    def run(self, tasks: Sequence[Callable[[], T]], limit: int) -> list[T | BaseException]:
        if not tasks:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(limit, len(tasks)))) as pool:
            futures = [pool.submit(task) for task in tasks]
            results: list[T | BaseException] = []
            for future in futures:
                try:
                    results.append(future.result())
                except Exception as exc:
                    results.append(exc)
            return results

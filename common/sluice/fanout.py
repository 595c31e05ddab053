"""Running a delivery's calls concurrently: at most ``limit`` in flight, no barrier.

The next task starts as soon as one finishes, so one slow call never holds back the others.
``limit`` may be a number or a function read before each start: the ventilator's policy
moves it while the delivery runs, and 0 means "start nothing more" (the circuit opened).
``on_done(index, result)`` is called in the caller's thread as each task ends, so the caller
can judge windows of completed calls while others still run. Exceptions come back as values:
one record's trouble must not fail its delivery. A task never started comes back as None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
Limit = int | Callable[[], int]
OnDone = Callable[[int, object], None]


def limit_now(limit: Limit) -> int:
    return max(0, limit() if callable(limit) else limit)


class ThreadFanOut:
    def run(self, tasks: Sequence[Callable[[], T]], limit: Limit, *,
            on_done: OnDone | None = None,
            most: int | None = None) -> list[T | BaseException | None]:
        """``most``: the highest a callable ``limit`` can go (the threads to keep)."""
        results: list[T | BaseException | None] = [None] * len(tasks)
        if not tasks:
            return results
        ceiling = most if most is not None else limit_now(limit)
        with ThreadPoolExecutor(max_workers=max(1, min(len(tasks), ceiling))) as pool:
            running: dict[Future, int] = {}
            started = 0
            while True:
                while started < len(tasks) and len(running) < limit_now(limit):
                    running[pool.submit(tasks[started])] = started
                    started += 1
                if not running:
                    return results  # all done, or the limit fell to 0: start nothing more
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    try:
                        results[index] = future.result()
                    except Exception as exc:
                        results[index] = exc
                    if on_done is not None:
                        on_done(index, results[index])

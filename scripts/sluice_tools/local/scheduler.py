"""Scheduled functions (``@app.schedule``) on a compressed clock.

EventBridge rules never fire in moto, so the local stack fires them itself: a rule of period
P fires every P / time_scale real seconds (``--time-scale 60`` makes 10 minutes pass in 10 s).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sluice_tools.local.events import scheduled_event
from sluice_tools.local.lambda_service import LambdaService


class Scheduler:
    def __init__(
        self,
        service: LambdaService,
        *,
        time_scale: float = 1.0,
        region: str = "us-east-1",
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.service = service
        self.time_scale = time_scale
        self.region = region
        self.fired: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, function_name: str, period_s: float) -> None:
        thread = threading.Thread(target=self._loop, args=(function_name, period_s),
                                  name=f"schedule-{function_name}", daemon=True)
        self._threads.append(thread)

    def start(self) -> Scheduler:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def fire(self, function_name: str) -> str:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = self.service.invoke(function_name,
                                     scheduled_event(self.region, function_name, now))
        self.fired[function_name] = self.fired.get(function_name, 0) + 1
        return result.error_type or "ok"

    def _loop(self, function_name: str, period_s: float) -> None:
        interval = period_s / self.time_scale
        while not self._stop.wait(interval):
            self.fire(function_name)

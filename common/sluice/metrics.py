"""One structured log line per batch that is also a CloudWatch Embedded Metric Format document.

CloudWatch turns the line into metrics (batch size, latency, errors...) with no metric filter;
Logs Insights can query every other field. Only ids, counts, timings, states and error kinds go
in: never record contents, never credentials.

Two families: the ventilator's per-batch metrics (``BATCH_METRICS``), which stop while the
mapping is disabled, and the rearm's state metrics (``STATE_METRICS``), emitted every run
(every 10 minutes) whatever the mapping does: alarms on "the circuit has been open for an
hour" must use the latter, or they would see no datapoint at all while the circuit is open.
Dimensions are ``Provider`` and, when given, ``Stage``: the deploy's alarms and dashboard
name exactly these.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

NAMESPACE = "Sluice"

# name -> unit, in the order they appear on the dashboard
BATCH_METRICS = {
    "BatchSize": "Count",
    "Calls": "Count",
    "Fetched": "Count",
    "Failed": "Count",
    "Parked": "Count",
    "Skipped": "Count",
    "Deferred": "Count",
    "LatencyP50": "Milliseconds",
    "LatencyP90": "Milliseconds",
    "ErrorRate": "None",
    "BreakerOpen": "Count",
}

# Emitted by the rearm on every run: 0/1 flags and the records waiting.
STATE_METRICS = {
    "BreakerOpen": "Count",
    "Paused": "Count",
    "WindowClosed": "Count",
    "MappingEnabled": "Count",
    "Backlog": "Count",
}

UNITS = {**BATCH_METRICS, **STATE_METRICS}


def dimensions(stage: str = "") -> list[str]:
    """The dimension set every sluice metric is published under (alarms must match it)."""
    return ["Provider", "Stage"] if stage else ["Provider"]


def emf_document(
    provider: str,
    timestamp_ms: int,
    metrics: Mapping[str, float],
    fields: Mapping[str, Any],
    *,
    stage: str = "",
) -> dict[str, Any]:
    dims = {"Provider": provider, **({"Stage": stage} if stage else {})}
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [dimensions(stage)],
                    "Metrics": [
                        {"Name": name, "Unit": UNITS.get(name, "None")} for name in metrics
                    ],
                }
            ],
        },
        **dims,
        **metrics,
        **fields,
    }


def stdout_emit(document: Mapping[str, Any]) -> None:
    """Lambda ships stdout to CloudWatch Logs, where EMF lines become metrics."""
    sys.stdout.write(json.dumps(document, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


Emit = Callable[[Mapping[str, Any]], None]

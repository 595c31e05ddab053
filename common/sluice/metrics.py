"""One structured log line per batch that is also a CloudWatch Embedded Metric Format document.

CloudWatch turns the line into metrics (batch size, latency, errors...) with no metric filter;
Logs Insights can query every other field. Only ids, counts, timings, states and error kinds go
in: never record contents, never credentials.
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


def emf_document(
    provider: str, timestamp_ms: int, metrics: Mapping[str, float], fields: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Provider"]],
                    "Metrics": [
                        {"Name": name, "Unit": BATCH_METRICS.get(name, "None")} for name in metrics
                    ],
                }
            ],
        },
        "Provider": provider,
        **metrics,
        **fields,
    }


def stdout_emit(document: Mapping[str, Any]) -> None:
    """Lambda ships stdout to CloudWatch Logs, where EMF lines become metrics."""
    sys.stdout.write(json.dumps(document, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


Emit = Callable[[Mapping[str, Any]], None]

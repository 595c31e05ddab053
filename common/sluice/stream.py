"""The provider's stream as the rearm sees it: how many shards are open right now.

The per-ventilator call cap divides X by shards x parallelization factor; trusting a setting
for the shard count would let a resharded stream exceed X. The rearm asks Kinesis every run
and records the answer in the control item, where every ventilator reads it.
"""

from __future__ import annotations

from typing import Any

import boto3


class StreamShards:
    def __init__(self, stream_name: str, *, client: Any = None) -> None:
        self.stream_name = stream_name
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("kinesis")
        return self._client

    def open_shards(self) -> int:
        summary = self.client.describe_stream_summary(StreamName=self.stream_name)
        return int(summary["StreamDescriptionSummary"]["OpenShardCount"])

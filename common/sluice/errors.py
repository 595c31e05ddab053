"""Errors a provider call can end in, by kind: the kind is what gets logged and stored."""

from __future__ import annotations


class ProviderError(Exception):
    """A provider call failed. ``kind`` is short and content-free (e.g. ``timeout``,
    ``http_503``); ``permanent`` means retrying cannot help (e.g. the record does not exist),
    so the record is parked at once instead of after max attempts. ``retry_after_s``: the
    provider asked to be left alone this long (a 429 or 503 with ``Retry-After``): it is
    busy, which says nothing against the record."""

    def __init__(self, kind: str, *, permanent: bool = False, retry_after_s: float = 0.0) -> None:
        super().__init__(kind)
        self.kind = kind
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class RetryBatch(Exception):
    """Raised by the ventilator when some records must be delivered again and the mapping
    does not report batch item failures: Lambda then retries the batch from its checkpoint."""

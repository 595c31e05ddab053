"""`sluice status`: per provider, is it moving, and if not, why.

Observed state only (what the mapping *is*, what is waiting), next to what the control item
*wants*; never a value from the past shown as current:

- **waiting**: records between the mapping's position and the stream's tip. AWS exposes no
  consumer checkpoint, so against AWS it is an estimate from today's counters (enqueued -
  fetched - skipped - parked, shown ``~N``) when they include ``enqueued``, else ``?``. The
  local stack serves each shard's checkpoint (``/_local/...`` on its Lambda API), so there
  the count is exact.
- **oldest**: age of the oldest waiting record. Exact on the local stack (the first record
  after each checkpoint). Against AWS, Lambda's IteratorAge, but only while the mapping is
  delivering and its last datapoint is recent: the age at the last batch is not the age now
  (a mapping disabled by hand with 10 records waiting showed the 5.8 s of its last batch).
  Otherwise ``-``.
- **STUCK**: records waiting, breaker closed, no pause, window open, and either the mapping is
  not delivering although the control item wants it enabled (disabled by hand, an update
  that never settled), or the oldest record has waited longer than ``--stuck-after`` while no
  batch was delivered or the ventilator was failing. The notes under the table say why: the
  control item's state and reason, the mapping's actual State against the wanted one, and the
  ventilator's recent errors (its log group: ``[ERROR]`` lines and batch lines with errors;
  Lambda's ``Errors`` metric).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

STUCK_AFTER_S = 600.0  # one rearm interval: by then any automatic repair has had its chance
FRESH_METRIC_S = 180.0  # a 1-minute datapoint younger than this is "now"
BATCH_LOOKBACK_S = 3600.0  # how far back to look for the last delivered batch
MAX_COUNT = 10_000  # records counted per shard on the local stack before saying "at least"
NOT_DELIVERING = frozenset({"Disabled", "Disabling", "Deleting"})


@dataclass
class ProviderStatus:
    provider: str
    error: str = ""  # unreachable: not deployed in this stage, no credentials...
    mapping: str = ""  # the mapping's actual State
    batch_size: int = 0  # the mapping's BatchSize
    wanted_enabled: bool = True  # what the control item says the mapping should be
    wanted_size: int = 0
    breaker: str = ""  # closed | half_open | open | paused | window
    reason: str = ""
    opens: int = 0
    waiting: int | None = None
    waiting_exact: bool = False  # True: counted from checkpoints; False: estimated
    waiting_capped: bool = False  # at least ``waiting`` (the count stopped at MAX_COUNT)
    oldest_s: float | None = None
    oldest_source: str = ""  # checkpoints | IteratorAge
    last_batch_s: float | None = None  # seconds since the last delivered batch (if known)
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count, recent
    stuck: bool = False
    why: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "error" if self.error else "STUCK" if self.stuck else self.breaker


def register(commands: Any) -> None:
    p = commands.add_parser(
        "status", help="is each provider moving: mapping, breaker, backlog, today's counts",
        description="Per provider: the breaker (or STUCK), the mapping's actual State and "
        "BatchSize (-> what the control item wants), the records waiting and the age of the "
        "oldest, today's fetched and parked; then why, for anything not healthy. Exits 1 if a "
        "provider is stuck or unreachable.")
    p.add_argument("provider", nargs="?", help="one provider (default: all)")
    p.add_argument("--stage")
    p.add_argument("--stuck-after", type=float, default=STUCK_AFTER_S, metavar="SECONDS",
                   help="a record waiting this long with no batch delivered, or with the "
                   f"ventilator failing, makes a provider STUCK (default: {STUCK_AFTER_S:.0f})")
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    p.set_defaults(run=run)


# -- what is observed --------------------------------------------------------------------------


def provider_status(name: str, stage: str | None, *, now: float | None = None,
                    stuck_after_s: float = STUCK_AFTER_S) -> ProviderStatus:
    from sluice_tools.provider_config import provider_settings

    try:
        settings = provider_settings(name, stage)
    except Exception as exc:
        return ProviderStatus(name, error=_short(exc))
    return observe(settings, now=time.time() if now is None else now,
                  stuck_after_s=stuck_after_s)


def observe(settings: Any, *, now: float, stuck_after_s: float = STUCK_AFTER_S,
            clients: Any = None) -> ProviderStatus:
    import boto3

    from sluice import breaker
    from sluice.clock import local_day
    from sluice.control import ControlStore
    from sluice.day_counts import DayCounts
    from sluice.mapping import MappingClient

    aws = clients or boto3
    s = settings
    row = ProviderStatus(s.provider)
    try:
        view = MappingClient(s.ventilator_function, client=aws.client("lambda")).find(
            stream_name=s.stream_name)
        dynamodb = aws.client("dynamodb")
        state = ControlStore(s.table_name, client=dynamodb).load()
        row.counts = DayCounts(s.table_name, client=dynamodb).get(local_day(now, s.zone))
    except Exception as exc:
        row.error = _short(exc)
        return row
    # The per-ventilator cap, as the ventilator computes it (the stream's real shard count).
    shards = max(s.shards, getattr(state, "shards", 0) or 0)
    cap = max(1, min(s.max_concurrency, s.max_concurrency // (shards * s.parallelization_factor)))
    wanted = breaker.desired_mapping(state, max_size=cap, fallback_size=view.batch_size, now=now)
    row.mapping, row.batch_size = view.state, view.batch_size
    row.wanted_enabled, row.wanted_size = wanted.enabled, wanted.batch_size
    row.breaker, row.opens = state.label, state.opens
    row.reason = _control_reason(state, s, now)

    cloudwatch, logs = aws.client("cloudwatch"), aws.client("logs")
    positions = _local_shard_positions(view.uuid)
    try:
        _exact_backlog(row, aws.client("kinesis"), s.stream_name, positions, now)
    except Exception:
        positions = []  # the stream answered no: fall back to the counters
    if not positions:
        _estimated_backlog(row)
    age, at = _iterator_age(cloudwatch, s.ventilator_function, now)
    row.last_batch_s = None if at is None else max(0.0, now - at)
    if row.oldest_source == "" and row.waiting != 0 and age is not None and at is not None \
            and view.state not in NOT_DELIVERING and now - at <= FRESH_METRIC_S:
        row.oldest_s, row.oldest_source = age, "IteratorAge"
    row.errors = _ventilator_errors(logs, cloudwatch, s.ventilator_function, now,
                                    stuck_after_s)
    _diagnose(row, stuck_after_s)
    return row


def _control_reason(state: Any, s: Any, now: float) -> str:
    if state.paused:
        return f"paused by an operator: {state.pause_reason}"
    if state.window_closed:
        opens = s.window.next_change(now)
        return "outside the access window" + (
            f"; opens {datetime.fromtimestamp(opens, s.zone):%a %H:%M %Z}" if opens else "")
    if state.breaker != "closed":
        return f"circuit {state.breaker.replace('_', '-')}: {state.reason or 'unhealthy'}"
    return ""


def _local_shard_positions(mapping_uuid: str) -> list[dict[str, Any]]:
    """Each shard's checkpoint, from the local stack's Lambda API (AWS has no such call)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_LAMBDA") or ""
    if not endpoint.startswith(("http://127.0.0.1", "http://localhost")):
        return []
    url = f"{endpoint.rstrip('/')}/_local/event-source-mappings/{mapping_uuid}/shards"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return list(json.load(response).get("Shards") or [])
    except (OSError, ValueError, urllib.error.HTTPError):
        return []


def _exact_backlog(row: ProviderStatus, kinesis: Any, stream: str,
                   positions: list[dict[str, Any]], now: float) -> None:
    """Count the records after each shard's checkpoint; the oldest is the first of them."""
    if not positions:
        return
    waiting, oldest, capped = 0, None, False
    for shard in positions:
        kwargs: dict[str, Any] = {"StreamName": stream, "ShardId": shard["ShardId"]}
        if shard.get("Checkpoint"):
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                          StartingSequenceNumber=shard["Checkpoint"])
        elif shard.get("StartingPosition") == "TRIM_HORIZON":
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:  # LATEST and nothing read yet: nothing it will ever deliver is there
            continue
        iterator = kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
        counted = 0
        while iterator and counted < MAX_COUNT:
            page = kinesis.get_records(ShardIterator=iterator, Limit=MAX_COUNT - counted)
            records = page.get("Records", [])
            if records and counted == 0:
                first = records[0]["ApproximateArrivalTimestamp"].timestamp()
                oldest = first if oldest is None else min(oldest, first)
            counted += len(records)
            if not records:  # moto answers an empty page only at the tip
                break
            iterator = page.get("NextShardIterator")
        capped = capped or counted >= MAX_COUNT
        waiting += counted
    row.waiting, row.waiting_exact, row.waiting_capped = waiting, True, capped
    if oldest is not None:
        row.oldest_s, row.oldest_source = max(0.0, now - oldest), "checkpoints"


def _estimated_backlog(row: ProviderStatus) -> None:
    c = row.counts
    if "enqueued" not in c:
        return  # unknown: nothing counts what was put on the stream today
    done = c.get("fetched", 0) + c.get("skipped", 0) + c.get("parked", 0)
    row.waiting, row.waiting_exact = max(0, c["enqueued"] - done), False


def _iterator_age(cloudwatch: Any, function_name: str,
                  now: float) -> tuple[float | None, float | None]:
    """Lambda's IteratorAge at the last delivered batch: (age in s, when), or (None, None)."""
    end = datetime.fromtimestamp(now, UTC)
    try:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/Lambda", MetricName="IteratorAge",
            Dimensions=[{"Name": "FunctionName", "Value": function_name}],
            StartTime=end - timedelta(seconds=BATCH_LOOKBACK_S),
            EndTime=end + timedelta(minutes=1), Period=60, Statistics=["Maximum"],
        )["Datapoints"]
    except Exception:
        return None, None
    if not points:
        return None, None
    last = max(points, key=lambda p: p["Timestamp"])
    return round(last["Maximum"] / 1000, 1), last["Timestamp"].timestamp()


def _ventilator_errors(logs: Any, cloudwatch: Any, function_name: str, now: float,
                       lookback_s: float) -> dict[str, int]:
    """Error kinds in the ventilator's log group over the lookback: ``[ERROR]`` lines (the
    function raised or timed out) and sluice's batch lines that report errors."""
    kinds: Counter[str] = Counter()
    start_ms = int((now - lookback_s) * 1000)
    kwargs: dict[str, Any] = {
        "logGroupName": f"/aws/lambda/{function_name}",
        "startTime": start_ms, "endTime": int(now * 1000) + 60_000,
        # AWS: any of these terms; the match is refined below (moto ignores the pattern).
        "filterPattern": '?"[ERROR]" ?"Task timed out" ?"errors"',
    }
    try:
        for _ in range(5):  # at most a few pages: a summary, not an archive
            page = logs.filter_log_events(**kwargs)
            for event in page.get("events", []):
                for kind in _error_kinds(event.get("message", "")):
                    kinds[kind] += 1
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
    except Exception:
        pass  # no log group (never invoked, or not the local stack's telemetry), no access
    if not any(k.startswith("function ") for k in kinds):
        failed = _metric_sum(cloudwatch, "Errors", function_name, now, lookback_s)
        if failed:
            kinds["function error"] += int(failed)
    return dict(kinds.most_common())


def _error_kinds(message: str) -> list[str]:
    text = message.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return []
        if doc.get("event") == "batch" and doc.get("errors"):
            return [str(e) for e in doc["errors"]]
        if doc.get("level") == "ERROR" and doc.get("errorType"):  # JSON log format
            return [f"function {doc['errorType']}"]
        return []
    if "[ERROR]" in text:
        kind = text.split("[ERROR]", 1)[1].strip().split(":", 1)[0].split()[:1]
        return [f"function {kind[0] if kind else 'error'}"]
    if "Task timed out" in text:
        return ["function Sandbox.Timedout"]
    return []


def _metric_sum(cloudwatch: Any, name: str, function_name: str, now: float,
                lookback_s: float) -> float:
    end = datetime.fromtimestamp(now, UTC)
    try:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/Lambda", MetricName=name,
            Dimensions=[{"Name": "FunctionName", "Value": function_name}],
            StartTime=end - timedelta(seconds=lookback_s), EndTime=end + timedelta(minutes=1),
            Period=60, Statistics=["Sum"],
        )["Datapoints"]
    except Exception:
        return 0.0
    return sum(p["Sum"] for p in points)


def _diagnose(row: ProviderStatus, stuck_after_s: float) -> None:
    """STUCK: waiting, breaker closed (no pause, window open), and not moving; say why."""
    if row.breaker != "closed" or not row.waiting:
        return
    why = []
    if row.mapping in NOT_DELIVERING and row.wanted_enabled:
        why.append(f"the mapping is {row.mapping} but the control item wants it Enabled "
                   f"(batch size {row.wanted_size}): changed outside sluice, or an update was "
                   "lost; the next rearm re-enables it (`sluice pause` to stop a provider)")
    quiet = row.last_batch_s is None or row.last_batch_s > stuck_after_s
    since = (_duration(row.last_batch_s) if row.last_batch_s is not None
             else f"over {_duration(BATCH_LOOKBACK_S)}")
    failing = any(k.startswith("function ") for k in row.errors)
    old = row.oldest_s is not None and row.oldest_s > stuck_after_s
    if not why and old and (quiet or failing):
        why.append(f"the oldest record has waited {_duration(row.oldest_s)} and "
                   + ("the ventilator is failing" if failing else
                      f"no batch was delivered for {since}"))
    elif not why and row.oldest_s is None and quiet and row.mapping not in NOT_DELIVERING:
        # Age unknown (AWS, no current IteratorAge): no batch for that long is enough.
        why.append(f"no batch delivered for {since} while records wait"
                   + (" and the ventilator is failing" if failing else ""))
    row.stuck, row.why = bool(why), why


# -- what is shown -----------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        return f"{hours // 24} d {hours % 24} h"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _waiting(row: ProviderStatus) -> str:
    if row.waiting is None:
        return "?"
    text = f"{row.waiting}" + ("+" if row.waiting_capped else "")
    return text if row.waiting_exact else f"~{text}"


def _size(row: ProviderStatus) -> str:
    if row.wanted_enabled and row.wanted_size and row.wanted_size != row.batch_size:
        return f"{row.batch_size}->{row.wanted_size}"
    return str(row.batch_size)


def _notes(row: ProviderStatus) -> list[str]:
    if row.error:
        return [f"unreachable: {row.error}"]
    notes = [f"STUCK: {why}" for why in row.why]
    if row.reason:
        notes.append(row.reason)
    if not row.stuck and row.wanted_enabled != (row.mapping not in NOT_DELIVERING) \
            and row.mapping in ("Enabled", "Disabled"):
        wanted = "Enabled" if row.wanted_enabled else "Disabled"
        notes.append(f"mapping is {row.mapping}, the control item wants {wanted}: the "
                     "next rearm converges it")
    if row.errors:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in list(row.errors.items())[:4])
        notes.append(f"recent ventilator errors: {kinds}")
    failed, skipped = row.counts.get("failed", 0), row.counts.get("skipped", 0)
    if failed or skipped:
        notes.append(f"today also: {failed} failed attempt(s) (retried), "
                     f"{skipped} skipped as duplicates")
    return notes


STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red",
               "paused": "magenta", "window": "cyan", "STUCK": "bold red",
               "error": "bold red"}


def render(rows: list[ProviderStatus], console: Any) -> None:
    """A table that fits 80 columns (short headers, no free-text column), then, per provider
    that needs explaining, its notes, wrapped to the terminal's width."""
    from rich import box
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    table = Table(title="sluice status", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False, title_justify="left")
    table.add_column("provider", overflow="fold", min_width=8)
    table.add_column("state", no_wrap=True)
    table.add_column("mapping", no_wrap=True)
    for header in ("size", "waiting", "oldest", "fetched", "parked"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        label = Text(row.label.replace("_", "-"), style=STATE_STYLE.get(row.label, ""))
        if row.error:
            table.add_row(row.provider, label, "", "", "", "", "", "")
        else:
            table.add_row(row.provider, label, row.mapping, _size(row), _waiting(row),
                          _duration(row.oldest_s), str(row.counts.get("fetched", 0)),
                          str(row.counts.get("parked", 0)))
    console.print(table)
    for row in rows:
        notes = _notes(row)
        if not notes:
            continue
        console.print(Text(row.provider, style="bold"))
        for note in notes:
            alarm = note.startswith(("STUCK", "unreachable"))
            console.print(Padding(Text(note, style="red" if alarm else ""), (0, 0, 0, 2)))
    console.print(Text(
        "size: the mapping's BatchSize (-> what the control item wants). waiting: exact from "
        "the shards' checkpoints (local stack), ~ estimated from today's counters, ? unknown. "
        "oldest: age of the oldest waiting record now; - when unknown.", style="dim"))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sluice_tools.provider_config import provider_names

    names = [args.provider] if args.provider else provider_names()
    now = time.time()
    rows = [provider_status(n, args.stage, now=now, stuck_after_s=args.stuck_after)
            for n in names]
    if args.json:
        docs = [{**asdict(r), "state": r.label} for r in rows]
        print(json.dumps({"at": now, "providers": docs}, indent=2))
    else:
        render(rows, Console())
    return 1 if any(r.error or r.stuck for r in rows) else 0


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:160]

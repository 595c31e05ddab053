"""A scenario fitted from the worker's ``provider_call`` log lines: `sluice simulate --fit LOGS`.

The worker logs one line per provider call (``sluice.worker.call_line``): when it started,
its latency, whether it was served, a content-free error kind and the HTTP status. From a file
of such lines this module rebuilds how the provider behaved and writes it as a scenario TOML
that ``load_scenario`` and the simulator accept.

- **Reading** (``parse_log``): JSON lines as the worker prints them (the local stack's stdout),
  the same with a prefix (Lambda's ``<time>\\t<request id>\\t{...}``, ``aws logs tail``'s
  ``<time> <stream> {...}``), CloudWatch Logs' JSON (``aws logs filter-log-events`` or
  ``get-log-events``: ``{"events": [{"timestamp", "message", ...}]}``, or a bare array of such
  events), Logs Insights results (``get-query-results`` JSON, or an exported table: JSON
  array or CSV with ``@message``). Anything that is not a ``provider_call`` line is skipped
  and counted; exact duplicates (overlapping exports) are dropped and counted.
- **In flight** (``with_in_flight``): a call's load is the number of calls in flight when it
  started, itself included: the calls that started before it and had not ended yet.
- **The knee** (``fit_knee``): per in-flight level k, the calls, their failure rate and the
  latency of the served ones. For each candidate capacity c, one model is fitted to all calls:
  failures at one rate at k <= c and a higher one above; log-latency mu + b1 log k, plus
  b2 log(k / c) above c (b2 >= 0): the hinge is where latency starts rising faster (a
  stretch by k / c, or calls beyond capacity waiting for a slot), while b1 absorbs a provider
  that slows gently as it fills. Failures and latencies are log-likelihoods of the same calls,
  so they add: the capacity is the c that explains both best. A knee must earn its two extra
  parameters (BIC): a provider never pushed past what it serves gets capacity = the highest
  level seen, flagged "not reached" (a lower bound).
- **Rates and latency**: the error rate of the calls at or under capacity, the overload error
  rate of those above; latency p50/p90 *at capacity* (what a scenario's ``latency_ms``
  means): the served calls of the top quarter of the levels under capacity, brought to the
  capacity level along the slope b1 (0 when latency is flat up to capacity).
- **Phases** (``fit_phases``): time is cut into fixed windows; adjacent windows (then
  segments) are merged, cheapest first, while merging costs less log-likelihood than a new
  phase's penalty (BIC for the segment's parameters and its boundary). A segment where
  nearly every call fails is an outage: one parameter, so a smaller penalty (a short outage
  is a handful of failed calls before the circuit opens, then a probe every 10 minutes).
- **Output** (``scenario_toml``): ``[provider]`` from the first phase, one ``[[phases]]``
  entry per later one, ``records`` = the calls served, ``[settings] max_concurrency`` = the
  highest in-flight level seen (the real X is at least that).

Latencies are what the worker measured (network and TLS included), which is what sluice's
policies see. A log that misses lines (a filter, a truncated export) undercounts in flight.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.policies import percentile
from sluice.worker import PROVIDER_CALL

OUTAGE_FAILURE_SHARE = 0.9  # a segment where at least this share of calls failed is an outage
MIN_VAR = 0.01  # floor of the log-latency variance (a latency resolution of about 10 %)
MAX_WINDOWS = 500  # the merge is quadratic in windows: wider windows beyond this
NICE_WINDOWS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)
PLAUSIBLE_NATS = 2.0  # capacities within this log-likelihood of the best are plausible
MIN_NEAR = 20  # served calls near capacity enough to read its latency from them alone
_MAX_NESTING = 4


class FitError(ValueError):
    """The log cannot be fitted; the message says why, for the command line."""


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    started_at: float  # epoch seconds
    latency_ms: float
    ok: bool
    error_kind: str | None = None
    status: int | None = None
    permanent: bool = False
    provider: str = ""
    in_flight: int = 0  # set by with_in_flight

    @property
    def ended_at(self) -> float:
        return self.started_at + self.latency_ms / 1000

    @property
    def failed(self) -> bool:
        """A failure the provider's health explains. A permanent one (the provider answered
        that this record cannot be served) is a healthy answer, as the ventilator judges it."""
        return not self.ok and not self.permanent


@dataclass
class LogRead:
    calls: list[Call]
    shape: str  # what the file looked like, for the summary
    entries: int = 0  # lines or events read
    skipped: int = 0  # entries that were not provider_call lines
    invalid: int = 0  # provider_call lines with a missing or malformed field
    duplicates: int = 0  # the same line twice (overlapping exports)

    def providers(self) -> Counter[str]:
        return Counter(c.provider for c in self.calls)


def read_log(path: str | Path) -> LogRead:
    path = Path(path)
    if not path.is_file():
        raise FitError(f"no such log file: {path}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FitError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_log(text)


def parse_log(text: str) -> LogRead:
    doc = _whole_document(text)
    if doc is not None:
        shape, entries = _document_entries(doc)
    else:
        shape, entries = "log lines", [line for line in text.splitlines() if line.strip()]
    read = LogRead([], shape, entries=len(entries))
    seen: set[tuple[Any, ...]] = set()
    for entry in entries:
        found = _provider_call(entry, 0)
        if found is None:
            read.skipped += 1
            continue
        call = _call(found)
        if call is None:
            read.invalid += 1
            continue
        key = (call.provider, call.started_at, call.latency_ms, call.ok, call.error_kind,
               call.status)
        if key in seen:
            read.duplicates += 1
            continue
        seen.add(key)
        read.calls.append(call)
    read.calls.sort(key=lambda c: c.started_at)
    return read


def _whole_document(text: str) -> Any:
    """The file as one JSON document (a CloudWatch export), or None (lines)."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):  # JSON lines ("Extra data"), or not JSON at all
        return None


def _document_entries(doc: Any) -> tuple[str, list[Any]]:
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        return "CloudWatch Logs events", doc["events"]  # filter-log-events, get-log-events
    if isinstance(doc, dict) and isinstance(doc.get("results"), list):
        return "Logs Insights results", [_insights_row(r) for r in doc["results"]]
    if isinstance(doc, list):
        if doc and all(isinstance(e, dict) and ("message" in e or "@message" in e) for e in doc):
            return "CloudWatch Logs events", doc
        return "JSON array", [_insights_row(e) if isinstance(e, list) else e for e in doc]
    return "JSON document", [doc]


def _insights_row(row: Any) -> Any:
    """A get-query-results row is a list of {"field", "value"}: its @message."""
    if isinstance(row, list):
        for cell in row:
            if isinstance(cell, dict) and cell.get("field") == "@message":
                return cell.get("value")
        return None
    return row


def _provider_call(entry: Any, depth: int) -> dict[str, Any] | None:
    """The provider_call document inside an entry: itself, its (@)message, or JSON found in a
    line after a prefix (a timestamp, a request id, a log stream, a CSV cell)."""
    if depth > _MAX_NESTING:
        return None
    if isinstance(entry, dict):
        if entry.get("event") == PROVIDER_CALL:
            return entry
        for key in ("message", "@message"):
            if key in entry:
                return _provider_call(entry[key], depth + 1)
        return None
    if not isinstance(entry, str) or PROVIDER_CALL not in entry:
        return None
    for doc in _json_objects(entry):
        found = _provider_call(doc, depth + 1)
        if found is not None:
            return found
    return None


def _json_objects(line: str) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    start = line.find("{")
    tries = 0
    while start >= 0 and tries < 4:
        try:
            yield decoder.raw_decode(line, start)[0]
            return
        except (ValueError, RecursionError):
            tries += 1
            start = line.find("{", start + 1)
    if '""' in line:  # a CSV export quotes the JSON: {""event"": ...}
        try:
            cells = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            return
        for cell in cells:
            if cell.lstrip().startswith("{"):
                try:
                    yield decoder.raw_decode(cell.strip())[0]
                except (ValueError, RecursionError):
                    continue


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _call(doc: dict[str, Any]) -> Call | None:
    started, latency, ok = _number(doc.get("started_at")), _number(doc.get("latency_ms")), \
        doc.get("ok")
    if started is None or started <= 0 or latency is None or latency < 0 \
            or not isinstance(ok, bool):
        return None
    kind = doc.get("error_kind")
    status = doc.get("status")
    provider = doc.get("provider")
    return Call(
        started_at=started,
        latency_ms=latency,
        ok=ok,
        error_kind=kind[:64] if isinstance(kind, str) and not ok else None,
        status=status if isinstance(status, int) and not isinstance(status, bool) else None,
        permanent=doc.get("permanent") is True and not ok,
        provider=provider[:64] if isinstance(provider, str) else "",
    )


def calls_of(read: LogRead, provider: str | None = None) -> list[Call]:
    """The calls of one provider: the one named, or the only one in the log."""
    providers = read.providers()
    if provider is not None:
        if provider not in providers:
            raise FitError(f"no provider_call lines for provider {provider!r}; the log has "
                           f"{_listing(providers)}")
        return [c for c in read.calls if c.provider == provider]
    if len(providers) > 1:
        raise FitError(f"the log has calls of several providers ({_listing(providers)}): "
                       "choose one with --fit-provider")
    return list(read.calls)


def _listing(providers: Counter[str]) -> str:
    return ", ".join(f"{name or '(unnamed)'} ({n} calls)" for name, n in providers.most_common())


# -- in flight ---------------------------------------------------------------------------------


def with_in_flight(calls: Iterable[Call]) -> list[Call]:
    """Each call with the number of calls in flight when it started, itself included, in
    start order. Calls starting at the same instant arrive one after the other, as a provider
    counts them: the first sees 1, the second 2."""
    ordered = sorted(calls, key=lambda c: (c.started_at, c.latency_ms))
    ends = sorted(c.ended_at for c in ordered)
    return [Call(c.started_at, c.latency_ms, c.ok, c.error_kind, c.status, c.permanent,
                 c.provider, max(1, i + 1 - bisect.bisect_right(ends, c.started_at)))
            for i, c in enumerate(ordered)]


# -- the knee ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelStats:
    """What the calls that started at one in-flight level saw."""

    in_flight: int
    calls: int
    failures: int
    p50_ms: float | None  # of the served calls
    p90_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


def level_table(calls: Sequence[Call]) -> list[LevelStats]:
    by_level: dict[int, list[Call]] = {}
    for c in calls:
        by_level.setdefault(c.in_flight, []).append(c)
    rows = []
    for level in sorted(by_level):
        group = by_level[level]
        served = [c.latency_ms for c in group if c.ok]
        rows.append(LevelStats(level, len(group), sum(c.failed for c in group),
                               percentile(served, 50) if served else None,
                               percentile(served, 90) if served else None))
    return rows


class _Levels:
    """Sufficient statistics per in-flight level (index 0 = level 1): calls, failures, and the
    served calls' count, sum and sum of squares of (winsorized) log-latency."""

    __slots__ = ("f", "m", "n", "sy", "syy")

    def __init__(self, size: int) -> None:
        self.n = [0.0] * size
        self.f = [0.0] * size
        self.m = [0.0] * size
        self.sy = [0.0] * size
        self.syy = [0.0] * size

    @classmethod
    def of(cls, calls: Iterable[Call], clip: tuple[float, float]) -> _Levels:
        calls = list(calls)
        levels = cls(max((c.in_flight for c in calls), default=0))
        for c in calls:
            i = c.in_flight - 1
            levels.n[i] += 1
            if c.failed:
                levels.f[i] += 1
            if c.ok:
                y = min(max(math.log(max(c.latency_ms, 0.01)), clip[0]), clip[1])
                levels.m[i] += 1
                levels.sy[i] += y
                levels.syy[i] += y * y
        return levels

    def __add__(self, other: _Levels) -> _Levels:
        size = max(len(self.n), len(other.n))
        out = _Levels(size)
        for name in self.__slots__:
            mine, theirs, into = getattr(self, name), getattr(other, name), getattr(out, name)
            for i, v in enumerate(mine):
                into[i] += v
            for i, v in enumerate(theirs):
                into[i] += v
        return out

    @property
    def calls(self) -> float:
        return sum(self.n)

    @property
    def failures(self) -> float:
        return sum(self.f)

    @property
    def top(self) -> int:
        """The highest level with calls."""
        return next((i + 1 for i in range(len(self.n) - 1, -1, -1) if self.n[i]), 0)


def _bernoulli(failures: float, n: float) -> float:
    """The maximised log-likelihood of ``failures`` in ``n`` calls at one rate."""
    if n <= 0 or failures <= 0 or failures >= n:
        return 0.0
    p = failures / n
    return failures * math.log(p) + (n - failures) * math.log(1 - p)


@dataclass(frozen=True)
class _KneeScores:
    scores: list[float]  # index c - 1: the penalised log-likelihood with capacity c
    best: int
    slopes: list[float] = field(default_factory=list)  # index c - 1: b1 with capacity c

    @property
    def slope(self) -> float:
        return self.slopes[self.best - 1] if self.slopes else 0.0

    @property
    def score(self) -> float:
        return self.scores[self.best - 1] if self.scores else 0.0

    def plausible(self) -> tuple[int, int]:
        near = [c for c, s in enumerate(self.scores, 1) if s >= self.score - PLAUSIBLE_NATS]
        return (min(near), max(near)) if near else (self.best, self.best)


def _knee_scores(lv: _Levels, var: float) -> _KneeScores:
    """The penalised log-likelihood of each capacity c = 1..top.

    Failures: one rate up to c, another (never lower) above. Log-latency of served calls:
    mu + b1 log k + b2 log(k / c) above c, b2 >= 0, shared variance ``var``: the hinge is
    where latency starts rising faster, so a provider that slows gently with load all along
    (or a congestion term just before capacity) does not drag the knee down. c = top is the
    model without a knee; a knee pays for its two extra parameters (BIC)."""
    top = lv.top
    if top == 0:
        return _KneeScores([], 0)
    total_n, total_f = lv.calls, lv.failures
    logs = [math.log(k) for k in range(1, top + 1)]
    # Suffix sums over levels k..top: n, f, m, m log k, m log^2 k, sy, sy log k.
    suffix = [[0.0] * 7 for _ in range(top + 1)]
    for i in range(top - 1, -1, -1):
        m, lk = lv.m[i], logs[i]
        row, nxt = suffix[i], suffix[i + 1]
        for j, v in enumerate((lv.n[i], lv.f[i], m, m * lk, m * lk * lk, lv.sy[i],
                               lv.sy[i] * lk)):
            row[j] = nxt[j] + v
    _, _, total_m, sz, szz, total_sy, szy = suffix[0]
    total_syy = sum(lv.syy)
    knee_penalty = math.log(max(total_n, 2.0))  # two extra parameters: 2 x (1/2) ln N
    # Without a hinge: mu + b1 log k.
    plain = _rss([[total_m, sz], [sz, szz]], [total_sy, szy], total_syy)
    scores, slopes = [], []
    for c in range(1, top + 1):
        n_o, f_o, m_o, a1, a2, sy_o, b1 = suffix[c]  # levels c+1..top
        n_u, f_u = total_n - n_o, total_f - f_o
        if n_o and n_u and f_o / n_o > f_u / n_u:
            ll_err = _bernoulli(f_u, n_u) + _bernoulli(f_o, n_o)
        else:
            ll_err = _bernoulli(total_f, total_n)
        rss, slope = plain
        if m_o and c < top:
            lc = logs[c - 1]
            sx, szx = a1 - lc * m_o, a2 - lc * a1
            sxx, sxy = a2 - 2 * lc * a1 + lc * lc * m_o, b1 - lc * sy_o
            hinged = _rss([[total_m, sz, sx], [sz, szz, szx], [sx, szx, sxx]],
                          [total_sy, szy, sxy], total_syy, rising=2)
            if hinged[0] < rss:
                rss, slope = hinged
        ll_lat = -rss / (2 * var) if total_m else 0.0
        scores.append(ll_err + ll_lat - (knee_penalty if c < top else 0.0))
        slopes.append(slope)
    best = max(range(1, top + 1), key=lambda c: (scores[c - 1], c))
    return _KneeScores(scores, best, slopes)


def _rss(gram: list[list[float]], xty: list[float], yty: float,
         rising: int = -1) -> tuple[float, float]:
    """The residual sum of squares of a least-squares fit from its normal equations (Gaussian
    elimination, a tiny ridge for levels that leave a column empty), and its second
    coefficient (the slope). With ``rising``, that coefficient must be >= 0: a fit that wants
    it negative is not better than one without."""
    n = len(xty)
    a = [[*row, xty[i]] for i, row in enumerate(gram)]
    for i in range(n):
        a[i][i] += 1e-9 * (1 + abs(a[i][i]))
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        if abs(a[col][col]) < 1e-12:  # one level only: the mean alone
            return max(0.0, yty - (xty[0] ** 2 / gram[0][0] if gram[0][0] else 0.0)), 0.0
        for r in range(n):
            if r != col:
                factor = a[r][col] / a[col][col]
                for k in range(col, n + 1):
                    a[r][k] -= factor * a[col][k]
    beta = [a[i][n] / a[i][i] for i in range(n)]
    if 0 <= rising < n and beta[rising] < 0:
        return math.inf, 0.0
    return max(0.0, yty - sum(b * v for b, v in zip(beta, xty, strict=True))), beta[1]


@dataclass(frozen=True)
class Knee:
    capacity: int
    reached: bool  # calls went past the capacity (else it is a lower bound)
    plausible: tuple[int, int]  # capacities almost as likely
    error_rate: float  # failures at or under capacity
    overload_error_rate: float | None  # failures above it (None: never past it)
    p50_ms: float | None  # served calls at or under capacity, brought to the capacity level
    p90_ms: float | None
    calls: int
    slope: float = 0.0  # log-latency per log in-flight level, up to capacity
    levels: list[LevelStats] = field(default_factory=list)


def latency_clip(calls: Sequence[Call]) -> tuple[float, float]:
    """Bounds of log-latency beyond which a served call is an outlier: median +- 4 robust
    standard deviations (an overloaded provider's stretch stays well inside)."""
    ys = [math.log(max(c.latency_ms, 0.01)) for c in calls if c.ok]
    if len(ys) < 3:
        return (-math.inf, math.inf)
    mid = statistics.median(ys)
    spread = max(1.4826 * statistics.median(abs(y - mid) for y in ys), 0.1)
    return (mid - 4 * spread, mid + 4 * spread)


def latency_variance(groups: Iterable[Sequence[Call]], clip: tuple[float, float]) -> float:
    """The variance of log-latency within groups (e.g. one in-flight level of one window):
    what is left once load and time are accounted for."""
    rss, dof = 0.0, 0
    for group in groups:
        by_level: dict[int, list[float]] = {}
        for c in group:
            if c.ok:
                y = min(max(math.log(max(c.latency_ms, 0.01)), clip[0]), clip[1])
                by_level.setdefault(c.in_flight, []).append(y)
        for ys in by_level.values():
            if len(ys) > 1:
                mean = sum(ys) / len(ys)
                rss += sum((y - mean) ** 2 for y in ys)
                dof += len(ys) - 1
    return max(MIN_VAR, rss / dof) if dof else 0.25


def fit_knee(calls: Sequence[Call], *, var: float | None = None,
             clip: tuple[float, float] | None = None) -> Knee:
    """The capacity and the rates around it, from calls with their in-flight levels."""
    if not calls:
        raise FitError("no calls to fit")
    clip = clip or latency_clip(calls)
    if var is None:
        var = latency_variance([calls], clip)
    lv = _Levels.of(calls, clip)
    knee = _knee_scores(lv, var)
    return _knee(calls, knee)


def _knee(calls: Sequence[Call], knee: _KneeScores) -> Knee:
    capacity = knee.best
    under = [c for c in calls if c.in_flight <= capacity]
    over = [c for c in calls if c.in_flight > capacity]
    # Latency at capacity (a scenario's latency_ms is the provider's at capacity): the served
    # calls of the top quarter of the levels under it (all of them if those are too few), each
    # brought to the capacity level along the fitted slope: 0 for a provider whose latency is
    # flat up to capacity, > 0 for one that slows as it fills.
    slope = max(0.0, knee.slope)
    near = [c for c in under if c.ok and c.in_flight >= 0.75 * capacity]
    served = [c.latency_ms * (capacity / c.in_flight) ** slope
              for c in (near if len(near) >= MIN_NEAR else [c for c in under if c.ok])] \
        or [c.latency_ms for c in calls if c.ok]
    return Knee(
        capacity=capacity,
        reached=bool(over),
        plausible=knee.plausible(),
        error_rate=sum(c.failed for c in under) / len(under) if under else 0.0,
        overload_error_rate=sum(c.failed for c in over) / len(over) if over else None,
        p50_ms=percentile(served, 50) if served else None,
        p90_ms=percentile(served, 90) if served else None,
        slope=knee.slope,
        calls=len(calls),
        levels=level_table(calls),
    )


# -- phases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedPhase:
    at_s: float  # scenario seconds from the log's first call (a window's start)
    end_s: float
    calls: int
    failures: int
    outage: bool
    knee: Knee | None  # None in an outage

    @property
    def failure_share(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Fit:
    provider: str
    phases: list[FittedPhase]
    calls: list[Call]  # with their in-flight levels
    window_s: float
    time_scale: float
    max_in_flight: int
    served: int
    error_kinds: Counter[str]


def default_window_s(span_s: float) -> float:
    """About a hundred windows over the log, at least a minute each, on a round value."""
    wanted = max(60.0, span_s / 100)
    return float(next((w for w in NICE_WINDOWS_S if w >= wanted), math.ceil(wanted)))


@dataclass
class _Segment:
    first: int  # window indexes, inclusive
    last: int
    calls: list[Call]
    levels: _Levels
    score: float


def fit_phases(calls: Sequence[Call], *, window_s: float | None = None,
               time_scale: float = 1.0, penalty: float | None = None) -> Fit:
    """Phases of the provider's behaviour over time, each with its knee (or an outage).

    ``time_scale``: scenario seconds per second of the log (a local run at ``--time-scale
    60`` compresses a scenario minute into a second); in-flight levels and latencies stay in
    real time, phase times are scaled."""
    if not calls:
        raise FitError("no provider_call lines to fit")
    if time_scale <= 0:
        raise FitError("the time scale must be > 0")
    calls = with_in_flight(calls)
    t0 = calls[0].started_at
    span_s = (calls[-1].started_at - t0) * time_scale
    window_s = window_s or default_window_s(span_s)
    if window_s <= 0:
        raise FitError("the window must be > 0 seconds")
    window_s = max(window_s, span_s / MAX_WINDOWS)
    wall_window = window_s / time_scale
    windows: dict[int, list[Call]] = {}
    for c in calls:
        windows.setdefault(int((c.started_at - t0) // wall_window), []).append(c)
    clip = latency_clip(calls)
    var = latency_variance(windows.values(), clip)
    # BIC: a phase's parameters (capacity, two failure rates, latency level, slope and
    # hinge) and its boundary cost (1/2) ln N each; an outage has one (everything fails), so
    # a short one, a handful of failed calls before the circuit opens, still shows.
    penalty = penalty if penalty is not None else 3.0 * math.log(max(len(calls), 2))
    outage_penalty = penalty / 3

    def score(lv: _Levels) -> float:
        return _knee_scores(lv, var).score

    def outage_like(lv: _Levels) -> bool:
        return lv.failures >= OUTAGE_FAILURE_SHARE * lv.calls

    segments = []
    for w in sorted(windows):
        lv = _Levels.of(windows[w], clip)
        segments.append(_Segment(w, w, windows[w], lv, score(lv)))

    def loss(a: _Segment, b: _Segment) -> tuple[float, _Levels, float]:
        """What merging costs beyond the penalty it saves (< 0: merge)."""
        merged = a.levels + b.levels
        merged_score = score(merged)
        saved = outage_penalty if outage_like(a.levels) != outage_like(b.levels) else penalty
        return a.score + b.score - merged_score - saved, merged, merged_score

    pending = [loss(a, b) for a, b in itertools.pairwise(segments)]
    while pending:
        i = min(range(len(pending)), key=lambda j: pending[j][0])
        cost, merged, merged_score = pending[i]
        if cost >= 0:
            break
        a, b = segments[i], segments[i + 1]
        segments[i] = _Segment(a.first, b.last, a.calls + b.calls, merged, merged_score)
        del segments[i + 1]
        del pending[i]
        if i < len(pending):
            pending[i] = loss(segments[i], segments[i + 1])
        if i > 0:
            pending[i - 1] = loss(segments[i - 1], segments[i])

    phases = []
    for k, seg in enumerate(segments):
        failures = sum(c.failed for c in seg.calls)
        outage = failures >= OUTAGE_FAILURE_SHARE * len(seg.calls)
        knee = None if outage else _knee(seg.calls, _knee_scores(seg.levels, var))
        end_window = segments[k + 1].first if k + 1 < len(segments) else seg.last + 1
        phases.append(FittedPhase(seg.first * window_s, end_window * window_s, len(seg.calls),
                                  failures, outage, knee))
    return Fit(
        provider=calls[0].provider,
        phases=phases,
        calls=calls,
        window_s=window_s,
        time_scale=time_scale,
        max_in_flight=max(c.in_flight for c in calls),
        served=sum(c.ok for c in calls),
        error_kinds=Counter(c.error_kind or "unclassified" for c in calls if not c.ok),
    )


# -- the scenario --------------------------------------------------------------------------------


def duration_text(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + \
        (f"{secs}s" if secs else "")
    return text or "0s"


def _rate(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


def _ms(value: float) -> float:
    return round(value, 1)


def _state_lines(knee: Knee) -> list[str]:
    lines = [f"capacity = {knee.capacity}"
             + ("" if knee.reached else "  # never pushed past: a lower bound")]
    if knee.p50_ms is not None and knee.p90_ms is not None:
        p50 = max(_ms(knee.p50_ms), 0.1)
        lines.append(f"latency_ms = {{ p50 = {p50}, p90 = {max(_ms(knee.p90_ms), p50)} }}")
    lines.append(f"error_rate = {_rate(knee.error_rate)}")
    if knee.overload_error_rate is not None:
        lines.append(f"overload_error_rate = {_rate(knee.overload_error_rate)}")
    return lines


def scenario_name(source: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", Path(source).stem.lower()).strip("-")[:40]
    return f"fitted-{stem or 'log'}"


def scenario_toml(fit: Fit, *, name: str, source: str = "", records: int | None = None,
                  max_concurrency: int | None = None) -> str:
    """The fit as a scenario file (``scenario.py``'s format)."""
    up = [p for p in fit.phases if not p.outage]
    if not up:
        raise FitError("every call failed: an outage from start to end, with no capacity, "
                       "latency or error rate to fit")
    x = max_concurrency or min(10_000, max(fit.max_in_flight, 1))
    first = fit.phases[0]
    initial = first.knee or up[0].knee
    assert initial is not None
    summary = "; ".join(_phase_summary(p) for p in fit.phases)
    description = (f"Fitted by `sluice simulate --fit` from {len(fit.calls)} provider_call "
                   f"lines{' of ' + fit.provider if fit.provider else ''}"
                   f"{' in ' + Path(source).name if source else ''}: {summary}.")
    out = [
        "# Fitted from the worker's provider_call lines: capacity = the in-flight level past",
        "# which failures and latency rise; latency_ms = the worker's measure at capacity.",
        f"name = {json.dumps(name)}",
        f"description = {json.dumps(description)}",
        f"records = {max(1, records if records is not None else fit.served)}"
        "  # the calls served (one record each)",
        "[provider]",
        *_state_lines(initial),
    ]
    if first.outage:
        out.append("outage = true")
    out += ["[settings]",
            f"max_concurrency = {x}  # the most calls seen in flight; X is at least that"]
    previous = first
    for phase in fit.phases[1:]:
        out += ["[[phases]]", f"at = {json.dumps(duration_text(phase.at_s))}"]
        if phase.outage:
            out.append("outage = true")
        else:
            assert phase.knee is not None
            if previous.outage:
                out.append("outage = false")
            out += _state_lines(phase.knee)
        previous = phase
    return "\n".join(out) + "\n"


def _phase_summary(phase: FittedPhase) -> str:
    at = duration_text(phase.at_s)
    if phase.outage:
        return f"from {at} an outage"
    knee = phase.knee
    assert knee is not None
    bound = "" if knee.reached else " or more"
    return (f"from {at} capacity {knee.capacity}{bound}, "
            f"{_rate(knee.error_rate) * 100:.1f} % errors")

"""The decision core for one delivery: what each call's result means. Pure: no IO, no clock.

Given how each provider call of a delivery ended, whether the breaker is closed, whether the
provider's recent samples show it serving (judged by the policy: health lives there) and the
record's history, it returns a verdict per record and the samples the policy may learn from.

Blame, the heart of "an outage parks nothing, a poison record blocks nothing":
- A failure while another call of the same delivery was served, and the recent samples show
  the provider serving well, is held against the record (``blame``): the provider was
  serving, this record was not. (Under overload some calls fail and others pass: that is the
  provider's trouble, not the unlucky records', so no blame then.) At ``max_attempts`` such
  attempts (counting its earlier lone failures, see below) it is parked.
- A failure that is the delivery's only call, while the breaker is closed and either the
  recent samples show the provider serving (with fewer than ``max_attempts`` lone failures
  in a row since it last served: a streak of them is an outage) or another record of the
  delivery was served after this one last failed, is *suspect*:
  it says little about the provider (it neither shrinks the batch nor opens the circuit) and
  nothing certain about the record. It is noted on the record; at ``max_attempts`` failures
  the record is *held*: it is called again only after the provider served another record of
  the same delivery since its last failure (now, or in an earlier attempt of the delivery),
  and then parked if it fails.
- Any other failure is the provider's: it feeds the policy and the record just waits on the
  stream, however long the outage lasts.
- A permanent error (the provider says the record cannot exist) parks at once.
- Blame needs a provider serving *cleanly* (``serving_cleanly``: its recent error rate well
  under the threshold, estimated conservatively): under overload a third of the calls may
  fail at random, and with a base error rate of 18 % a record failing four times in a row is
  bad luck, not proof. Parking on blame needs two such blames (suspicions, noted at an
  outage's onset or in a brownout, count but never alone). A held record's own failures are
  in the recent samples, so its one call beside a witness needs only a serving provider.
- A provider that says it is busy (429, or any answer with ``Retry-After``: ``CallResult.busy``)
  failed the call for its own reasons: it feeds the policy (overload) and blames nobody, held
  records included.
- An outcome that is unknown (``ambiguous``: the Invoke may have reached the worker) or a call
  that definitely never started (``rejected``: throttled) is retried later, blames nobody and
  teaches the policy nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sluice.policies import Sample

OK, FAILED, PERMANENT, AMBIGUOUS, REJECTED = "ok", "failed", "permanent", "ambiguous", "rejected"
# The worker found today's result already stored (a killed worker's, or a lost answer's) and
# made no provider call: the record is fetched, but the provider proved nothing, so it is no
# sample for the policy and no witness against the records beside it.
FOUND = "found"
# Failures that are the provider's by definition: "too many requests".
BUSY_ERRORS = frozenset({"http_429"})
# What becomes of the record in this delivery.
FETCHED, RETRY, PARK = "fetched", "retry", "park"


@dataclass(frozen=True)
class CallResult:
    """One provider call of the delivery, with the record's history before it."""

    sequence_number: str
    record_id: str
    kind: str  # ok | found | failed | permanent | ambiguous | rejected
    latency_ms: float = 0.0
    error: str = ""
    attempts: int = 0  # this attempt's number
    blamed: int = 0  # failures already held against the record
    suspects: int = 0  # lone failures already noted on the record
    witnessed: bool = False  # a held record called after another record was served
    # Another record of the delivery was served after this one last failed (too few recent
    # samples to judge the provider, but it does serve): a lone failure is then suspect.
    served_since_failure: bool = False
    started_at: float = 0.0  # when the call was claimed and started
    retry_after_s: float = 0.0  # the provider's Retry-After, if it gave one

    @property
    def busy(self) -> bool:
        """The provider refused the call as too busy (rate limited): its state, not the
        record's."""
        return self.kind == FAILED and (self.retry_after_s > 0 or self.error in BUSY_ERRORS)


@dataclass(frozen=True)
class Verdict:
    sequence_number: str
    record_id: str
    action: str  # fetched | retry | park
    error: str = ""
    blame: bool = False  # hold this failure against the record
    suspect: bool = False  # note a lone failure on the record
    reason: str = ""  # why it is parked (content-free)


@dataclass(frozen=True)
class Judgement:
    verdicts: tuple[Verdict, ...]
    samples: tuple[Sample, ...]  # what the policy learns from
    hold: bool = False  # a record is held: deliveries must bring it company
    served: int = 0  # calls the provider answered (ok or permanent)

    @property
    def suspects(self) -> int:
        return sum(1 for v in self.verdicts if v.suspect)

    def lone_failures(self, before: int) -> int:
        """Lone failures since the provider last served: a streak of them is an outage."""
        return 0 if self.served else before + self.suspects

    def count(self, action: str) -> int:
        return sum(1 for v in self.verdicts if v.action == action)


def is_held(blamed: int, suspects: int, max_attempts: int) -> bool:
    """Failed too often to be called alone again: the next call needs a witness (another
    record served in the same delivery), and then parks the record if it fails."""
    return suspects > 0 and blamed + suspects >= max_attempts


def judge(
    calls: Sequence[CallResult],
    *,
    breaker_closed: bool,
    provider_serving: bool,
    max_attempts: int,
    error_rate_threshold: float = 0.2,
    serving_cleanly: bool = True,
) -> Judgement:
    answered = [c for c in calls if c.kind in (OK, FAILED, PERMANENT)]
    served = sum(1 for c in answered if c.kind in (OK, PERMANENT))
    failed = len(answered) - served
    # Overload fails some calls and serves others: blame only a delivery that was healthy
    # apart from its failures (one failure, or a rate within the threshold).
    clean = failed <= max(1, error_rate_threshold * len(answered))
    lone = len(answered) == 1
    # Every call failed, each on a record that had failed before and that the provider has
    # served others since: poison records side by side at a shard's head look like an outage
    # (nothing served) right after a healthy probe. Judged as lone failures, suspects; a
    # streak of them is an outage all the same (``lone_failures``).
    repeat_offenders = bool(answered) and served == 0 and all(
        c.served_since_failure for c in answered)
    verdicts: list[Verdict] = []
    samples: list[Sample] = []
    hold = False
    for c in calls:
        if c.kind == OK:
            verdicts.append(Verdict(c.sequence_number, c.record_id, FETCHED))
            samples.append(Sample(c.latency_ms, True))
        elif c.kind == FOUND:
            verdicts.append(Verdict(c.sequence_number, c.record_id, FETCHED))
        elif c.kind == PERMANENT:
            # The provider answered (it is up); the record can never be fetched.
            verdicts.append(Verdict(c.sequence_number, c.record_id, PARK, c.error,
                                    reason=f"{c.error} (permanent)"))
            samples.append(Sample(c.latency_ms, True))
        elif c.kind in (AMBIGUOUS, REJECTED):
            verdicts.append(Verdict(c.sequence_number, c.record_id, RETRY, c.error))
        elif c.busy:  # rate limited: an overload signal, never held against the record
            verdicts.append(Verdict(c.sequence_number, c.record_id, RETRY, c.error))
            samples.append(Sample(c.latency_ms, False))
        elif c.witnessed and provider_serving:
            # A held record, called because the provider served another record of this
            # delivery after its last failure: failing again, it is the record.
            verdicts.append(Verdict(c.sequence_number, c.record_id, PARK, c.error, blame=True,
                                    reason=f"{c.error} after {c.attempts} attempts while "
                                    "others were served"))
            samples.append(Sample(c.latency_ms, False))
        elif served > 0 and provider_serving and serving_cleanly and clean:
            blamed = c.blamed + 1
            # Suspicions count towards parking, but never alone: failures at an outage's
            # onset or in a brownout can look like a record's (and be noted as suspects);
            # two failures beside served calls, from a clean provider, are proof.
            park = blamed + c.suspects >= max_attempts and blamed >= min(2, max_attempts)
            reason = f"{c.error} after {c.attempts} attempts while others were served"
            verdicts.append(Verdict(c.sequence_number, c.record_id, PARK if park else RETRY,
                                    c.error, blame=True, reason=reason if park else ""))
            samples.append(Sample(c.latency_ms, False))
        elif (lone or repeat_offenders) and breaker_closed and (
                provider_serving or c.served_since_failure):
            # Never parks: only a failure beside a served call is proof against the record.
            hold = hold or is_held(c.blamed, c.suspects + 1, max_attempts)
            verdicts.append(Verdict(c.sequence_number, c.record_id, RETRY, c.error,
                                    suspect=True))
        else:  # everything failed: the provider's problem, never the record's
            verdicts.append(Verdict(c.sequence_number, c.record_id, RETRY, c.error))
            samples.append(Sample(c.latency_ms, False))
    return Judgement(tuple(verdicts), tuple(samples), hold, served)

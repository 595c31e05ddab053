"""The pure decision core on the cases the fault campaign found."""

from sluice import verdicts
from sluice.verdicts import FAILED, FOUND, OK, CallResult, judge


def call(rid, kind, **kw):
    return CallResult(f"seq-{rid}", rid, kind, latency_ms=100.0, error="http_503"
                      if kind == FAILED else "", **kw)


def test_poison_records_side_by_side_after_a_healthy_probe_are_suspects_not_an_outage():
    # Two records that failed before, the provider serving others since (the probe): both
    # fail again. Before: "everything failed", the provider's fault, the circuit reopened at
    # every rearm and the shard behind them never moved.
    both = [call("p1", FAILED, attempts=5, served_since_failure=True),
            call("p2", FAILED, attempts=5, served_since_failure=True)]
    judged = judge(both, breaker_closed=True, provider_serving=False, max_attempts=3)
    assert [v.suspect for v in judged.verdicts] == [True, True]
    assert judged.samples == ()  # nothing against the provider
    # A record failing for the first time beside them makes it an outage again.
    fresh = [*both, call("r3", FAILED, attempts=1)]
    judged = judge(fresh, breaker_closed=True, provider_serving=False, max_attempts=3)
    assert not any(v.suspect for v in judged.verdicts) and len(judged.samples) == 3


def test_a_result_the_worker_found_is_fetched_but_no_witness_and_no_sample():
    # During an outage a killed worker's stored result is found; r-10 fails beside it.
    calls = [call("r-9", FOUND), call("r-10", FAILED, attempts=1)]
    judged = judge(calls, breaker_closed=True, provider_serving=True, max_attempts=3)
    assert [v.action for v in judged.verdicts] == [verdicts.FETCHED, verdicts.RETRY]
    assert judged.served == 0 and not judged.verdicts[1].blame
    # With a real served call beside it, the blame stands.
    judged = judge([call("r-8", OK), *calls], breaker_closed=True, provider_serving=True,
                   max_attempts=3)
    assert judged.verdicts[2].blame


def test_a_busy_provider_blames_no_record_not_even_a_held_one():
    # Found by the retry-after scenario in window dispatch: a provider answering 429 when its
    # slots are full serves some calls and refuses others; held records called beside a
    # served one were parked "after 5 attempts while others were served".
    for busy in (dict(error="http_429"), dict(error="http_503", retry_after_s=5.0)):
        refused = CallResult("seq-h", "h", FAILED, latency_ms=20.0, attempts=5, blamed=2,
                             witnessed=True, **busy)
        fresh = CallResult("seq-f", "f", FAILED, latency_ms=20.0, attempts=2, blamed=1, **busy)
        judged = judge([call("ok", OK), refused, fresh], breaker_closed=True,
                       provider_serving=True, max_attempts=3)
        assert [v.action for v in judged.verdicts] == [verdicts.FETCHED, verdicts.RETRY,
                                                      verdicts.RETRY]
        assert not any(v.blame or v.suspect for v in judged.verdicts)
        # The policy hears the refusals: they are the provider's overload signal.
        assert [s.ok for s in judged.samples] == [True, False, False]
    # A plain 503 beside a served call, held and witnessed, still parks (the record's fault).
    held = call("h", FAILED, attempts=5, blamed=2, witnessed=True)
    judged = judge([call("ok", OK), held], breaker_closed=True, provider_serving=True,
                   max_attempts=3)
    assert judged.verdicts[1].action == verdicts.PARK

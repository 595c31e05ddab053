"""One hostile record must never block a shard: whatever a Kinesis record's ``data`` holds, the
ventilator's decoding (base64, then the payload) either yields a valid request or raises
MalformedRecord, with a reason that repeats nothing of the record."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sluice.intake import (
    RECORD_ID_PATTERN,
    FetchRequest,
    MalformedRecord,
    decode_kinesis_data,
    encode_request,
    parse_request,
)

# A reason is a short description for logs and the ledger: printable ASCII, nothing else.
SAFE_REASON = re.compile(r"[ -~]{1,100}")


@dataclass(frozen=True)
class Hostile:
    name: str
    data: str  # the Kinesis event record's "data" field, as the ventilator receives it
    marker: str  # bytes distinctive of this payload: they must never reach the reason

    def __str__(self) -> str:
        return self.name


def payload(name: str, raw: bytes, marker: str) -> Hostile:
    return Hostile(name, base64.b64encode(raw).decode(), marker)


def record(name: str, record_id: object, marker: str, **extra: object) -> Hostile:
    return payload(name, json.dumps({"record_id": record_id, **extra}).encode(), marker)


CORPUS = [
    # Nesting bombs: over the cap, and under it (the parser's own guard)
    payload("nesting bomb [ x100,000", b"[" * 100_000, "[["),
    payload("nesting bomb [ x4,000", b"[" * 4000, "[["),
    payload("nesting bomb { x50,000", b'{"a":' * 50_000, '{"a"'),
    payload("nesting bomb { x800", b'{"a":' * 800, '{"a"'),
    payload("nesting bomb [{ mixed", b'[{"a":' * 600, '[{"a"'),
    # Numbers no request holds
    payload("5,000-digit integer", b'{"record_id": ' + b"7" * 5000 + b"}", "7777"),
    payload("4,000-digit integer", b'{"record_id": ' + b"7" * 4000 + b"}", "7777"),
    payload("huge float exponent", b'{"record_id": 1e999999999}', "999999999"),
    payload("NaN", b'{"record_id": "NANCASE-1", "score": NaN}', "NANCASE-1"),
    payload("-Infinity", b'{"record_id": "INFCASE-1", "score": -Infinity}', "INFCASE-1"),
    payload("bare NaN", b"NaN", ""),  # the reason names NaN: a fixed word, not an echo
    # Not base64 at all
    Hostile("invalid base64 alphabet", "@@SECRET@@", "SECRET"),
    Hostile("base64 with non-ASCII", "eyJ4IjoiU0VDUkVUIn0=\u00e9", "eyJ4IjoiU0VDUkVUIn0"),
    Hostile("truncated base64", "eyJyZWNvcmRfaWQiOiJUUlVOQ0FURUQifQ", "eyJyZWNvcmRfaWQi"),
    # Not UTF-8, or not JSON
    payload("non-UTF-8 (Latin-1)", b'{"record_id": "CAF\xc9-LATIN1"}', "LATIN1"),
    payload("UTF-16 with BOM", '{"record_id": "UTF16-ID"}'.encode("utf-16"), "UTF16-ID"),
    payload("UTF-8 BOM", b'\xef\xbb\xbf{"record_id": "BOM-ID"}', "BOM-ID"),
    payload("empty", b"", ""),
    payload("whitespace only", b" \t\r\n " * 10, "\t"),
    payload("oversized 10 MB", b'{"record_id": "ok", "blob": "' + b"Z" * 10_000_000 + b'"}',
            "ZZZZ"),
    payload("null bytes", b"\x00" * 64, "\x00"),
    payload("null byte inside a string", b'{"record_id": "NUL\x00SECRET"}', "SECRET"),
    payload("trailing garbage", b'{"record_id": "ok"} TRAILING-SECRET', "TRAILING-SECRET"),
    payload("truncated JSON", b'{"record_id": "TRUNC-SECRET', "TRUNC-SECRET"),
    payload("python literal", b"{'record_id': 'PYLIT-SECRET'}", "PYLIT-SECRET"),
    payload("duplicate keys", b'{"record_id": "FIRST-ID", "record_id": "SECOND-ID"}', "-ID"),
    # Valid JSON that is not a request object
    payload("JSON array", b'["ARRAY-SECRET"]', "ARRAY-SECRET"),
    payload("JSON string", b'"STRING-SECRET"', "STRING-SECRET"),
    payload("JSON null", b"null", "null"),
    payload("JSON true", b"true", "true"),
    payload("no record_id", b'{"id": "NOID-SECRET"}', "NOID-SECRET"),
    # Ids that would break DynamoDB or S3 keys, or escape a key prefix
    record("id of 129 chars", "Q" * 129, "QQQQ"),
    record("id of 10,000 chars", "Q" * 10_000, "QQQQ"),
    record("empty id", "", '""'),
    record("id with /", "acct/SLASHED", "SLASHED"),
    record("id ..", "..", ".."),
    record("id ../x", "../DOTDOT-ID", "DOTDOT-ID"),
    record("id with %2e", "%2e%2e%2fPCT-ID", "%2e"),
    record("id with NUL", "NUL\x00ESCAPED", "ESCAPED"),
    record("id with BEL", "CTRL\x07BELL", "BELL"),
    record("id with tab", "TAB\tSECRET", "SECRET"),
    record("id with trailing newline", "NEWLINE-ID\n", "NEWLINE-ID"),
    record("id with space", "SP ACE-ID", "ACE-ID"),
    record("id with leading space", " LEAD-ID", "LEAD-ID"),
    record("id with fullwidth letters", "\uff21\uff23\uff23-FULLWIDTH", "FULLWIDTH"),
    record("id with Cyrillic lookalikes", "\u0410\u0421\u0421-CYRILLIC", "CYRILLIC"),
    record("id with dotted I", "\u0130D-TURKISH", "TURKISH"),
    record("id with a lone surrogate", "\ud800SURROGATE", "SURROGATE"),
    record("id with RTL override", "ACC\u202eLTR-ID", "LTR-ID"),
    record("id that is a number", 123456789, "123456789"),
    record("id that is a list", ["LISTED-ID"], "LISTED-ID"),
    record("id that is an object", {"id": "NESTED-ID"}, "NESTED-ID"),
    record("id that is null", None, "null"),
    record("id that is true", True, "true"),
    record("hostile source", "ok", "SOURCE-SECRET", source="SOURCE-SECRET"),
    record("extra huge field", "ok", "HHHH", extra="H" * 100_000),
]


def decode(data: str) -> FetchRequest:
    """What the ventilator does with each record of a batch."""
    return parse_request(decode_kinesis_data(data))


@pytest.mark.parametrize("case", CORPUS, ids=str)
def test_a_hostile_record_is_malformed_and_its_reason_repeats_none_of_it(case):
    with pytest.raises(MalformedRecord) as info:
        decode(case.data)
    reason = info.value.reason
    assert SAFE_REASON.fullmatch(reason), reason
    if case.marker:
        assert case.marker not in reason
        assert case.marker.lower() not in reason.lower()
    assert str(info.value) == reason
    # No exception rides along: a UnicodeDecodeError or JSONDecodeError holds the payload, and
    # error trackers report chained exceptions even when a printed traceback hides them.
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_the_corpus_names_are_unique():
    assert len({case.name for case in CORPUS}) == len(CORPUS)


# -- properties ------------------------------------------------------------------------------

VALID_IDS = st.from_regex(RECORD_ID_PATTERN, fullmatch=True)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

# Payloads near the real shape are where a decoder's mistakes hide; random bytes cover the rest.
NEAR_REQUESTS = st.builds(
    lambda rid, source, extra: json.dumps(
        {"record_id": rid, "source": source, **extra}).encode(),
    st.one_of(VALID_IDS, st.text(max_size=140), JSON_VALUES),
    st.sampled_from(["scheduled", "adhoc", "SCHEDULED", ""]) | st.text(max_size=10),
    st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=3),
)
MUTATED = st.builds(
    lambda valid, at, junk: valid[:at] + junk + valid[at:],
    VALID_IDS.map(encode_request), st.integers(0, 40), st.binary(min_size=1, max_size=8),
)
PAYLOADS = st.one_of(
    st.binary(max_size=512),
    st.binary(min_size=4090, max_size=4100),
    NEAR_REQUESTS,
    MUTATED,
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def assert_valid_or_malformed(data: bytes) -> None:
    try:
        request = parse_request(data)
    except MalformedRecord as bad:
        assert SAFE_REASON.fullmatch(bad.reason), bad.reason
        return
    # Anything accepted is a request the rest of sluice can key and store safely.
    assert isinstance(request, FetchRequest)
    assert re.fullmatch(RECORD_ID_PATTERN, request.record_id)
    assert request.record_id.isascii() and "/" not in request.record_id
    assert request.source in ("scheduled", "adhoc")


@settings(max_examples=300, deadline=None)
@given(PAYLOADS)
@example(b"[" * 4000)
@example(b'{"record_id": "ok", "record_id": "ok"}')
@example(b'{"record_id": "ok"}\n')
def test_any_payload_is_a_valid_request_or_malformed(data):
    assert_valid_or_malformed(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(base64.b64encode),
                 st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())))
def test_any_kinesis_data_is_a_valid_request_or_malformed(data):
    try:
        raw = decode_kinesis_data(data)
    except MalformedRecord as bad:
        assert bad.reason == "data is not valid base64"
        return
    assert_valid_or_malformed(raw)


@settings(max_examples=300, deadline=None)
@given(VALID_IDS, st.sampled_from(["scheduled", "adhoc"]))
def test_every_valid_id_round_trips(record_id, source):
    request = decode(base64.b64encode(encode_request(record_id, source)).decode())
    assert (request.record_id, request.source) == (record_id, source)

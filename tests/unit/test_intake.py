"""Stream payloads: valid requests decode; anything else is malformed with a content-free reason."""

import base64

import pytest

from sluice.intake import (
    MAX_PAYLOAD_BYTES,
    MalformedRecord,
    decode_kinesis_data,
    encode_request,
    parse_request,
)


def test_round_trip():
    request = parse_request(encode_request("ACC-42", "adhoc"))
    assert (request.record_id, request.source) == ("ACC-42", "adhoc")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfeSECRET", "not UTF-8"),
        (b'{"record_id": "SECRET', "not JSON"),
        (b'["SECRET", 2]', "not a JSON object"),
        (b'{"id": "SECRET"}', "record_id"),
        (b'{"record_id": "../SECRET"}', "record_id"),
        (b'{"record_id": "ok", "source": "SECRET"}', "source"),
    ],
)
def test_malformed_payloads_name_the_problem_without_their_contents(payload, reason):
    with pytest.raises(MalformedRecord, match=reason) as info:
        parse_request(payload)
    assert "SECRET" not in info.value.reason  # every payload carries it: never echoed


def test_extra_fields_are_ignored_and_source_defaults_to_scheduled():
    request = parse_request(b'{"record_id": "ACC-1", "trace": {"id": [1, 2.5, null]}}')
    assert (request.record_id, request.source) == ("ACC-1", "scheduled")


def test_bytearray_and_memoryview_payloads_decode_like_bytes():
    payload = encode_request("ACC-7")
    assert parse_request(bytearray(payload)) == parse_request(memoryview(payload))


def test_the_size_cap_is_inclusive_and_checked_before_parsing():
    payload = encode_request("ACC-1")
    at_cap = payload + b" " * (MAX_PAYLOAD_BYTES - len(payload))
    assert parse_request(at_cap).record_id == "ACC-1"
    with pytest.raises(MalformedRecord) as info:
        parse_request(at_cap + b" ")
    assert info.value.reason == f"payload too large ({MAX_PAYLOAD_BYTES + 1} bytes > 4096)"


def test_ids_are_at_most_128_characters():
    assert parse_request(encode_request("A" * 128)).record_id == "A" * 128
    with pytest.raises(MalformedRecord, match="string_too_long"):
        parse_request(encode_request("A" * 129))


@pytest.mark.parametrize("payload", [b"[" * 100_000, b'{"record_id": ' + b"9" * 5000 + b"}"],
                         ids=["nesting bomb", "5,000-digit integer"])
def test_the_parser_guards_hold_even_without_the_size_cap(payload):
    # Defence in depth: the cap keeps these away from the parser, but they are safe anyway.
    with pytest.raises(MalformedRecord) as info:
        parse_request(payload, max_bytes=len(payload))
    assert "too large" not in info.value.reason


def test_an_unexpected_error_becomes_a_content_free_malformed_record(monkeypatch):
    import sluice.intake

    def broken(pairs):
        raise KeyError("SECRET-PAYLOAD-BYTES")

    monkeypatch.setattr(sluice.intake, "_unique_keys", broken)
    with pytest.raises(MalformedRecord) as info:
        parse_request(encode_request("ACC-1"))
    assert info.value.reason == "payload could not be decoded (KeyError)"
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_kinesis_data_decodes_from_base64():
    assert decode_kinesis_data(base64.b64encode(b"payload").decode()) == b"payload"


@pytest.mark.parametrize("data", ["not base64!", "aGk", "aGk=\n", "aGk=é", None, 42, ["aGk="]],
                         ids=["alphabet", "padding", "newline", "non-ascii", "none", "int", "list"])
def test_invalid_base64_is_malformed(data):
    with pytest.raises(MalformedRecord) as info:
        decode_kinesis_data(data)
    assert info.value.reason == "data is not valid base64"

"""Stream payloads: valid requests decode; anything else is malformed with a content-free reason."""

import pytest

from sluice.intake import MalformedRecord, encode_request, parse_request


def test_round_trip():
    request = parse_request(encode_request("ACC-42", "adhoc"))
    assert (request.record_id, request.source) == ("ACC-42", "adhoc")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"id": "x"}', "record_id"),
        (b'{"record_id": "../etc/passwd"}', "record_id"),
        (b'{"record_id": "ok", "source": "hack"}', "source"),
    ],
)
def test_malformed_payloads_name_the_problem(payload, reason):
    with pytest.raises(MalformedRecord, match=reason) as info:
        parse_request(payload)
    assert "passwd" not in info.value.reason  # never echo contents

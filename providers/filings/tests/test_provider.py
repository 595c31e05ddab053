"""Filings against the fake provider's XML endpoint over real HTTP."""

from pathlib import Path

import pytest

from sluice.errors import ProviderError
from sluice.handlers import HANDLERS
from sluice.settings import load_settings
from sluice_tools.fake_provider import FakeProvider, PercentBehaviour
from sluice_tools.local.provider_app import load_provider

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def app():
    return load_provider(PROJECT).module


@pytest.fixture
def api():
    api = FakeProvider(PercentBehaviour()).start()
    yield api
    api.stop()


@pytest.fixture
def settings(api):
    return load_settings(provider="filings", api_base_url=api.url, timezone="Europe/Paris")


def test_a_final_filing_is_stored_with_a_decimal_amount(app, api, settings):
    result = app.fetch_record("FR-2026-0042", settings)
    assert result["filing_id"] == "FR-2026-0042" and result["status"] == "final"
    assert (result["currency"], result["amount"]) == ("EUR", "166.51")  # as the fake serves it
    assert api.stats()["served"] == 1


@pytest.mark.parametrize(("body", "kind"), [
    (b"<filing", "invalid_xml"),
    (b'<filing id="OTHER"><status>final</status></filing>', "invalid_response"),
    (b'<filing id="F1"><amount>1.0</amount><status>draft</status></filing>',
     "filing_not_final"),
    (b'<filing id="F1"><amount>lots</amount><status>final</status></filing>',
     "invalid_amount"),
])
def test_unusable_answers_fail_the_attempt_by_kind(app, body, kind):
    from chalicelib.provider import to_result  # loaded by the app fixture

    with pytest.raises(ProviderError, match=kind):
        to_result("F1", body)


def test_a_failing_registry_is_a_provider_error(app, api, settings):
    api.behaviour = PercentBehaviour(error_percentage=100)
    with pytest.raises(ProviderError, match="http_503"):
        app.fetch_record("FR-1", settings)


def test_the_app_declares_the_runtimes_four_handlers(app):
    assert sorted(app.app.handler_map) == sorted(HANDLERS)

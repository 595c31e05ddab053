"""Quotes against the fake provider over real HTTP, with its bearer token."""

from pathlib import Path

import pytest

from sluice.errors import ProviderError
from sluice.handlers import HANDLERS
from sluice.settings import load_settings
from sluice_tools.fake_provider import FakeProvider, PercentBehaviour
from sluice_tools.local.provider_app import load_provider

PROJECT = Path(__file__).resolve().parents[1]
TOKEN = "test-token"


@pytest.fixture
def app():
    return load_provider(PROJECT).module


@pytest.fixture
def api():
    api = FakeProvider(PercentBehaviour(), bearer_token=TOKEN).start()
    yield api
    api.stop()


@pytest.fixture
def settings(api, monkeypatch):
    import sluice.secrets

    monkeypatch.setattr(sluice.secrets._shared, "token", lambda secret_id: TOKEN)
    return load_settings(provider="quotes", api_base_url=api.url,
                         secret_id="sluice/quotes/api-token")


def test_a_quote_becomes_a_decimal_price(app, api, settings):
    result = app.fetch_record("AAPL.O", settings)
    assert result["instrument"] == "AAPL.O" and result["currency"] == "USD"
    assert result["price"] == "895.81"  # the fake provider serves 89581 cents for AAPL.O
    assert api.stats()["served"] == 1


def test_without_the_token_the_provider_refuses(app, api, settings, monkeypatch):
    import sluice.secrets

    monkeypatch.setattr(sluice.secrets._shared, "token", lambda secret_id: "wrong")
    with pytest.raises(ProviderError, match="http_401"):
        app.fetch_record("MSFT.O", settings)
    assert api.unauthorized == 1 and api.stats()["served"] == 0


@pytest.mark.parametrize("doc", [
    {"id": "OTHER", "data": {"value": 100}},
    {"id": "X", "data": {"value": -5}},
    {"id": "X", "data": {"value": "12.3"}},
    ["not", "an", "object"],
])
def test_provider_mistakes_fail_the_attempt(app, doc):
    from chalicelib.provider import to_result  # loaded by the app fixture

    with pytest.raises(ProviderError):
        to_result("X", doc)


def test_the_app_declares_the_runtimes_four_handlers(app):
    assert sorted(app.app.handler_map) == sorted(HANDLERS)

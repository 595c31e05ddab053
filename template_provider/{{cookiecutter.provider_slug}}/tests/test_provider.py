"""{{ cookiecutter.provider_name }} against the fake provider over real HTTP."""

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
    api = FakeProvider(PercentBehaviour(){% if cookiecutter.auth == "bearer-secret" %}, bearer_token=TOKEN{% endif %}).start()
    yield api
    api.stop()


@pytest.fixture
def settings(api, monkeypatch):
{%- if cookiecutter.auth == "bearer-secret" %}
    import sluice.secrets

    monkeypatch.setattr(sluice.secrets._shared, "token", lambda secret_id: TOKEN)
{%- endif %}
    return load_settings(provider="{{ cookiecutter.provider_slug }}", api_base_url=api.url{% if cookiecutter.auth == "bearer-secret" %},
                         secret_id="sluice/{{ cookiecutter.provider_slug }}/api-token"{% endif %})


def test_fetches_one_record_in_the_common_format(app, api, settings):
    result = app.fetch_record("rec-1", settings)
    assert result["record_id"] == "rec-1" and result["provider"] == "{{ cookiecutter.provider_slug }}"
    # What the fake provider serves for rec-1 (adapt once fetch_record calls the real API):
{%- if cookiecutter.api_format == "json" %}
    assert result["data"] == {"value": 52963}
{%- else %}
    assert result["data"] == {"amount": "529.63", "status": "final"}
{%- endif %}
    assert api.stats()["served"] == 1


def test_a_failing_provider_is_a_provider_error(app, api, settings):
    api.behaviour = PercentBehaviour(error_percentage=100)
    with pytest.raises(ProviderError, match="http_503"):
        app.fetch_record("rec-2", settings)


def test_the_app_declares_the_runtimes_four_handlers(app):
    assert sorted(app.app.handler_map) == sorted(HANDLERS)

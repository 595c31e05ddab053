"""Settings: defaults, environment names, and errors that name the variable."""

import pytest

from sluice.settings import SettingsError, load_settings


def test_defaults():
    s = load_settings()
    assert (s.max_concurrency, s.max_attempts, s.latency_threshold_ms, s.policy) == (
        10, 3, 1000.0, "default")
    # A claim's lease outlives the worker's timeout by the margin: 90 s + 30 s.
    assert (s.worker_timeout_s, s.lease_margin_s, s.lease_s) == (90, 30, 120)


def test_reads_upper_case_prefixed_environment(monkeypatch):
    monkeypatch.setenv("SLUICE_MAX_CONCURRENCY", "25")
    monkeypatch.setenv("SLUICE_TIMEZONE", "America/New_York")
    monkeypatch.setenv("SLUICE_POLICY", "seed")
    s = load_settings()
    assert (s.max_concurrency, s.timezone, s.policy) == (25, "America/New_York", "seed")


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("SLUICE_MAX_CONCURRENCY", "0", "SLUICE_MAX_CONCURRENCY"),
        ("SLUICE_TIMEZONE", "Mars/Olympus", "unknown IANA timezone"),
        ("SLUICE_POLICY", "yolo", "unknown policy 'yolo'"),
        ("SLUICE_ERROR_RATE_THRESHOLD", "1.5", "SLUICE_ERROR_RATE_THRESHOLD"),
        ("SLUICE_MAX_ATTEMPTS", "three", "SLUICE_MAX_ATTEMPTS"),
    ],
)
def test_invalid_values_fail_with_the_variable_named(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=message) as info:
        load_settings()
    assert var in str(info.value)


def test_fan_out_must_fit_under_x():
    with pytest.raises(SettingsError, match="exceeds max_concurrency"):
        load_settings(max_concurrency=4, shards=2, parallelization_factor=3)
    assert load_settings(max_concurrency=10, shards=2, parallelization_factor=2).max_batch_size == 2


def test_missing_required_setting_names_it():
    with pytest.raises(SettingsError, match="SLUICE_TABLE_NAME"):
        load_settings().require("table_name")


def test_a_cold_start_with_bad_settings_names_the_variable(monkeypatch):
    from sluice.runtime import LazyRuntime

    monkeypatch.setenv("SLUICE_MAX_CONCURRENCY", "-1")
    with pytest.raises(SettingsError, match="SLUICE_MAX_CONCURRENCY"):
        LazyRuntime()()  # what a provider's handler does on its first invocation

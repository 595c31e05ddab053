"""The `sluice` command against a running local stack (the same code paths as against AWS)."""

import json

import pytest

from sluice.handlers import HANDLERS
from sluice_tools.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("local", "feed", "status", "pause", "resume"):
        assert command in out


def test_feed_then_status_then_pause_and_resume(stack, capsys, monkeypatch, wait_until):
    monkeypatch.setenv("SLUICE_STAGE", "local")
    monkeypatch.setenv("COLUMNS", "200")  # rich would squeeze the table into 80 columns
    assert main(["feed", "demo", "--count", "30"]) == 0
    assert "put 30 record(s) on sluice-demo" in capsys.readouterr().out
    # The stack's pollers deliver in the background: wait for the provider to have served all.
    assert wait_until(lambda: stack.api.stats()["distinct_served"] == 30, timeout_s=60)
    assert main(["status", "demo"]) == 0
    out = capsys.readouterr().out
    assert "Enabled" in out and "closed" in out
    assert main(["pause", "demo", "--reason", "maintenance"]) == 0
    assert "paused (maintenance)" in capsys.readouterr().out
    assert main(["status", "demo"]) == 0
    assert "maintenance" in capsys.readouterr().out
    assert main(["resume", "demo"]) == 0


def test_feed_rejects_invalid_ids_with_line_numbers(stack, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLUICE_STAGE", "local")
    ids = tmp_path / "ids.txt"
    ids.write_text("good-1\n../bad\ngood-2\n")
    assert main(["feed", "demo", "--ids", str(ids)]) == 2
    assert "lines 2" in capsys.readouterr().err


def test_demo_rejects_an_unknown_scenario(capsys):
    assert main(["local", "demo", "--scenario", "nope"]) == 2
    assert "shipped: " in capsys.readouterr().err


def test_up_describes_the_stack(stack):
    described = stack.describe()
    assert sorted(described["functions"]) == sorted(HANDLERS)
    assert described["functions"]["ventilator"] == "sluice-demo-local-ventilator"
    assert json.loads(json.dumps(described)) == described  # printed as JSON, nothing lost


def test_simulate_compares_dispatch_modes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out, chart = tmp_path / "compare.json", tmp_path / "compare.png"
    assert main(["simulate", "--compare", "steady", "--dispatch", "batch",
                 "--dispatch", "window", "--records", "300", "--json", str(out),
                 "--chart", str(chart)]) == 0
    runs = json.loads(out.read_text())
    assert sorted((r["policy"], r["dispatch"]) for r in runs) == [
        ("default", "batch"), ("default", "window"), ("seed", "batch"), ("seed", "window")]
    assert all(r["fetched"] == 300 and r["lost"] == 0 for r in runs)
    assert chart.stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "dispatch" in table and "window" in table and "batch" in table


def test_simulate_means_over_seeds_and_refuses_unknown_modes(tmp_path, capsys):
    out, chart = tmp_path / "seeds.json", tmp_path / "run.png"
    assert main(["simulate", "steady", "--records", "200", "--dispatch", "window",
                 "--seeds", "2", "--json", str(out), "--chart", str(chart)]) == 0
    assert [r["seed"] for r in json.loads(out.read_text())] == [1, 2]
    assert "mean of 2 seeds" in capsys.readouterr().out
    assert chart.stat().st_size > 10_000
    assert main(["simulate", "steady", "--dispatch", "sideways"]) == 2
    assert "unknown dispatch" in capsys.readouterr().err
    assert main(["simulate", "steady", "--dispatch", "batch", "--dispatch", "window"]) == 2
    assert "--compare" in capsys.readouterr().err

"""Run results: what a row says of its latency measurement."""

from pocketnet.results import RunResult


def _result(cpu_ms: float | None, p90: float | None) -> RunResult:
    return RunResult("teacher", "resnet18", 10, 1, 5.0, cpu_ms, p90, 32, 32)


def test_a_widely_spread_latency_is_marked_unreliable():
    assert "CPU ms note" not in _result(6.0, 6.5).row()
    assert "CPU ms note" not in _result(None, None).row()
    note = _result(6.0, 30.0).row()["CPU ms note"]
    assert note.startswith("unreliable: p90 5.0x the median")

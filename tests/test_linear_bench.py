"""The linear benchmark runs and writes its JSON (tiny shapes on the CPU; the numbers are
checked for sense, never for speed)."""

import json

import pytest

from randfx.bench import linear
from randfx.ops import heuristics


def test_linear_bench_times_stacked_layers_for_decode_rows_only(tmp_path):
    out = tmp_path / "linear.json"
    decode_rows, training_rows = 1, heuristics.FUSED_MAX_ROWS + 4
    assert linear.main(["--device", "cpu", "--quick", "--skip-pmv", "--rows",
                        str(decode_rows), str(training_rows), "--stack", "2",
                        "--json", str(out)]) == 0
    decode, training = json.loads(out.read_text())["rows"]
    assert decode["rows"] == decode_rows and training["rows"] == training_rows
    assert decode["dense_stack_us"] > 0 and decode["seeded_stack_us"] > 0
    assert decode["stack_x"] == pytest.approx(decode["dense_stack_us"]
                                              / decode["seeded_stack_us"])
    assert "stack_x" not in training  # above FUSED_MAX_ROWS rows W is materialised
    assert decode["fwd_x"] == pytest.approx(decode["dense_fwd_us"] / decode["seeded_fwd_us"])

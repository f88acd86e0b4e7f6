"""The fusion cost at the paper's size stays within 15% of the poster's increments (benchmarks/bench_cost.py)."""

from pathlib import Path

import pytest
from helpers.scripts import import_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cost.py"


@pytest.fixture(scope="module")
def bench():
    yield from import_script(BENCH, "bench_cost")


@pytest.mark.slow
@pytest.mark.parametrize("fusion_type, params_m, gmacs", [("ssm", 9.0, 8.0), ("transformer", 94.0, 8.5)])
def test_increment_over_the_backbone_matches_the_poster(bench, fusion_type, params_m, gmacs):
    result = bench.measure(fusion_type, hidden_size=768, fuser_layers=12, fuser_heads=12)
    increment = result["increment"]
    assert increment["trainable_params_m"] == pytest.approx(params_m, rel=0.15)
    assert increment["gmacs"] == pytest.approx(gmacs, rel=0.15)
    assert result["within_tolerance"]
    rows = {row["component"]: row for row in result["rows"]}
    if fusion_type == "ssm":
        # Two mixers of 3.75M parameters at D = 768 (in_proj 2.36M, out_proj 1.18M, x_proj, dt_proj, conv, D).
        assert rows["video mixer"]["trainable_params"] == rows["text mixer"]["trainable_params"] == 3_746_304
        assert rows["shared A_log"]["trainable_params"] == 1536 * 16
        # Counted through the scan op's registered formula: 9·B·D·L·N plus B·D·L each for the D skip and the z gate.
        from modeling_mambavl.ops import selective_scan_flops

        expected = sum(selective_scan_flops((b, 1536, length), (1536, 16), has_D=True, has_z=True)
                       for b, length in ((1, 1569), (2, 40)))
        assert rows["selective scan"]["flops"] == expected
        assert rows["selective scan"]["counted_with"].startswith("FlopCounterMode")
    else:
        assert rows["text model (frozen)"]["frozen_params"] > 120_000_000  # RoBERTa-base, run whole and frozen
        assert rows["text model (frozen)"]["trainable_params"] == 0

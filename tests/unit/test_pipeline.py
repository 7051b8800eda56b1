"""Pure parts of the processing pipeline."""

from __future__ import annotations

from qc_daemon.processing.pipeline import thresholds_for_site


def test_site_thresholds_merge_global_then_specific() -> None:
    overrides = {"*": {"motion": 0.6, "noise": 0.7}, "MR1": {"motion": 0.8}, "SCANNER2": {"wrap": 0.9}}
    assert thresholds_for_site(overrides, "PHILIPS|X|1|MR1", "MR1", "SCANNER9") == {"motion": 0.8, "noise": 0.7}
    assert thresholds_for_site(overrides, "", "", "SCANNER2") == {"motion": 0.6, "noise": 0.7, "wrap": 0.9}
    assert thresholds_for_site({}, "a", "b") == {}

"""Scanner identity and protocol normalisation."""

from __future__ import annotations

from qc_daemon.series.identity import ScannerIdentity, normalise_protocol


def test_protocol_normalisation_groups_console_variants() -> None:
    assert normalise_protocol("WIP  T1_MPRAGE") == "t1 mprage"
    assert normalise_protocol("t1_mprage") == "t1 mprage"
    assert normalise_protocol("T1 MPRAGE 2") == "t1 mprage"
    assert normalise_protocol("", "Ax DWI TENSOR R2") == "ax dwi tensor r2"
    assert normalise_protocol("") == "unknown"


def test_protocol_mapping_by_name_and_regex() -> None:
    mapping = {"t1 mprage": "T1 3D", r"ax dwi.*": "DWI"}
    assert normalise_protocol("WIP T1_MPRAGE", mapping=mapping) == "T1 3D"
    assert normalise_protocol("Ax DWI TENSOR R2", mapping=mapping) == "DWI"
    assert normalise_protocol("flair", mapping=mapping) == "flair"


def test_scanner_key_prefers_headers_and_falls_back_to_calling_ae() -> None:
    a = ScannerIdentity("SIEMENS", "TrioTim", "35034", "MRC35034", "SCANNER1")
    b = ScannerIdentity("SIEMENS", "TrioTim", "35034", "MRC35034", "OTHERAE")
    assert a.key == b.key == "SIEMENS|TRIOTIM|35034|MRC35034"
    anonymous = ScannerIdentity("", "", "", "", "SCANNER1")
    assert anonymous.key.endswith("AE=SCANNER1")
    assert anonymous.display_name == "SCANNER1"

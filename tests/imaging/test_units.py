"""Pure helpers of the conversion: geometry, CSA parsing, value coercion, labels, skip decisions."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from pydicom.dataset import Dataset

from qc_daemon.imaging import csa
from qc_daemon.imaging import values as v
from qc_daemon.imaging.diffusion import Diffusion, diffusion_of
from qc_daemon.imaging.geometry import GeometryError, cluster_orientations, stack_geometry
from qc_daemon.imaging.headers import SeriesHeader, _derived_by_compression_only
from qc_daemon.imaging.plan import distinct_keys, make_label
from qc_daemon.imaging.rules import ConversionRules, VolumeTraits, is_phase, volume_skip_reason

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def test_stack_geometry_sorts_along_normal_and_measures_spacing() -> None:
    positions = [(0.0, 0.0, 6.0), (0.0, 0.0, 0.0), (0.0, 0.0, 3.0)]
    g = stack_geometry(positions, AXIAL, (0.5, 0.7))
    assert g.order == (1, 2, 0)
    assert g.origin == (0.0, 0.0, 0.0)
    assert g.spacing == pytest.approx((0.7, 0.5, 3.0))
    assert g.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert g.warnings == ()


def test_stack_geometry_sagittal_normal_is_row_cross_column() -> None:
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    g = stack_geometry([(5.0, 0, 0), (-5.0, 0, 0)], sagittal, (1.0, 1.0))
    assert g.normal == pytest.approx((-1.0, 0.0, 0.0))
    assert g.origin == (5.0, 0.0, 0.0) and g.order == (0, 1)
    assert np.linalg.det(np.reshape(g.direction, (3, 3))) == pytest.approx(1.0)


def test_stack_geometry_warns_on_gaps_and_shear_and_refuses_duplicates() -> None:
    g = stack_geometry([(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 5)], AXIAL, (1.0, 1.0))
    assert g.spacing[2] == pytest.approx(5 / 3)
    assert g.warnings and g.warnings[0].startswith("non-uniform slice spacing")
    sheared = stack_geometry([(0, 0, 0), (2, 0, 1), (4, 0, 2)], AXIAL, (1.0, 1.0))
    assert any("in-plane" in w for w in sheared.warnings)
    with pytest.raises(GeometryError):
        stack_geometry([(0, 0, 0), (0, 0, 0)], AXIAL, (1.0, 1.0))


def test_single_slice_uses_fallback_spacing() -> None:
    assert stack_geometry([(0, 0, 0)], AXIAL, (1, 1), fallback_slice_spacing=4.0).spacing[2] == 4.0


def test_orientations_cluster_with_tolerance() -> None:
    a = (0.7262333631038, -0.6816839993252, 0.0888370833543, 0.6873778036216, 0.7219207610099, -0.0796377417)
    b = (0.7262333508059, -0.6816839993252, 0.0888370833543, 0.6873778036216, 0.7219207610099, -0.0796377417)
    assert cluster_orientations([a, b, AXIAL, None]) == [0, 0, 1, -1]


def _csa_blob(entries: dict[str, list[str]]) -> bytes:
    out = b"SV10\x04\x03\x02\x01" + struct.pack("<2I", len(entries), 77)
    for name, items in entries.items():
        out += struct.pack("<64si4s3i", name.encode(), len(items), b"FD\x00\x00", 4, len(items), 77)
        for item in items:
            data = item.encode() + b"\x00"
            out += struct.pack("<4i", len(data), len(data), 77, len(data)) + data + b"\x00" * (-len(data) % 4)
    return out


def test_csa_parser_reads_sv10_and_survives_garbage() -> None:
    blob = _csa_blob({"SliceNormalVector": ["0.0", "0.1", "0.99"], "NumberOfImagesInMosaic": ["36"]})
    header = csa.parse_csa(blob)
    assert csa.csa_floats(header, "SliceNormalVector") == [0.0, 0.1, 0.99]
    assert csa.csa_floats(header, "NumberOfImagesInMosaic") == [36.0]
    assert csa.parse_csa(b"SV10" + b"\xff" * 40) == {}
    assert csa.parse_csa(None) == {}


def test_ascconv_slice_vectors() -> None:
    text = (
        b"junk\n### ASCCONV BEGIN object=MrProtDataImpl ###\n"
        b"sSliceArray.asSlice[0].sPosition.dCor\t = -41.67\n"
        b"sSliceArray.asSlice[0].sPosition.dTra = -75.7\n"
        b"sSliceArray.asSlice[0].sNormal.dTra = 1\n### ASCCONV END ###"
    )
    protocol = csa.ascconv(text)
    assert csa.slice_vector(protocol, 0, "sPosition") == (0.0, -41.67, -75.7)
    assert csa.slice_vector(protocol, 0, "sNormal") == (0.0, 0.0, 1.0)
    assert csa.slice_vector(protocol, 1, "sPosition") is None


def test_value_coercion() -> None:
    assert v.floats("1000\\8\\0\\0") == [1000.0, 8.0, 0.0, 0.0]
    assert v.floats(b"3.5\\2 ") == [3.5, 2.0]
    assert v.floats(struct.pack("<2d", 1.5, -2.0)) == [1.5, -2.0]
    assert v.first_int(struct.pack("<H", 36)) == 36
    assert v.floats("abc") == [] and v.first_float(None) is None
    assert v.strings("ORIGINAL\\primary\\M ") == ("ORIGINAL", "PRIMARY", "M")
    assert v.fmt_vector((-0.99993, 0.0114, 6.3e-05)) == "(-1,0.011,0)"
    assert v.fmt_number(928.28855) == "928.3" and v.fmt_number(-0.0) == "0"


def test_labels_and_distinct_keys() -> None:
    assert make_label({"EffectiveEchoTime": "4.6", "ComplexImageComponent": "MAGNITUDE"}) == "TE=4.6 MAGNITUDE"
    assert make_label({"DiffusionBValue": "1000", "DiffusionGradientOrientation": "(0.7,0.7,0)"}) == (
        "b=1000 g=(0.7,0.7,0)"
    )
    assert make_label({}) == "single volume"
    rows = [{"AcquisitionNumber": "1", "SeriesNumber": str(k), "File": f"{k}.dcm"} for k in range(3)]
    assert distinct_keys(rows, ["AcquisitionNumber"], ["SeriesNumber", "File"]) == ["SeriesNumber"]


def test_ge_diffusion_offset_and_vendor_precedence() -> None:
    ds = Dataset()
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
    block.add_new(0x39, "IS", [1_000_001_000, 8, 0, 0])
    acq = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    for element, value in ((0xBB, "0.5"), (0xBC, "0.5"), (0xBD, "0.7071")):
        acq.add_new(element, "DS", value)
    ds.DiffusionBValue = 999.0  # GE fills the standard element only on some images: its own wins
    d = diffusion_of(ds, "GE MEDICAL SYSTEMS")
    assert d.b_value == 1000 and d.gradient == (0.5, 0.5, 0.7071)
    acq.add_new(0xE0, "DS", "0")  # no diffusion directions: (0043,1039) means something else, standard wins
    assert diffusion_of(ds, "GE MEDICAL SYSTEMS").b_value == 999.0


def test_phase_and_trace_decisions() -> None:
    rules = ConversionRules()
    assert is_phase(VolumeTraits(("ORIGINAL", "PRIMARY", "P", "ND")))
    assert is_phase(VolumeTraits(("ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE")))
    assert is_phase(VolumeTraits(("ORIGINAL", "PRIMARY", "OTHER"), ge_image_kind=1))
    assert not is_phase(VolumeTraits(("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")))
    trace = VolumeTraits(
        ("ORIGINAL", "PRIMARY"), diffusion=Diffusion(2000.0, (0.0, 0.0, 0.0), ""), philips_direction="I"
    )
    assert volume_skip_reason(trace, 40, rules) == "derived: Philips isotropic diffusion trace"
    b0 = VolumeTraits(("ORIGINAL", "PRIMARY"), diffusion=Diffusion(0.0, (0.0, 0.0, 0.0), ""), philips_direction="I")
    assert volume_skip_reason(b0, 40, rules) is None
    iso = VolumeTraits(("ORIGINAL", "PRIMARY"), diffusion=Diffusion(1000.0, None, "ISOTROPIC"))
    assert volume_skip_reason(iso, 40, rules) == "derived: isotropic diffusion trace"
    partial = VolumeTraits(("ORIGINAL", "PRIMARY"), expected_slices=32)
    assert volume_skip_reason(partial, 20, rules) == "incomplete volume: 20 of 32 slices"
    lossy = VolumeTraits(("DERIVED", "PRIMARY", "M"), derived_by_compression=True)
    assert volume_skip_reason(lossy, 40, rules) is None
    assert (
        volume_skip_reason(VolumeTraits(("DERIVED", "PRIMARY", "M")), 40, rules)
        == "derived: ImageType DERIVED\\PRIMARY\\M"
    )


def test_derived_by_compression_needs_only_the_compression_code() -> None:
    ds = Dataset()
    ds.LossyImageCompression = "01"
    code = Dataset()
    code.CodeValue = "113040"
    ds.DerivationCodeSequence = [code]
    assert _derived_by_compression_only(ds)
    other = Dataset()
    other.CodeValue = "113072"  # multiplanar reformatting
    ds.DerivationCodeSequence = [code, other]
    assert not _derived_by_compression_only(ds)
    ds.LossyImageCompression = "00"
    ds.DerivationCodeSequence = [code]
    assert not _derived_by_compression_only(ds)


def test_empty_series_header() -> None:
    header = SeriesHeader.empty()
    assert header.series_uid == "" and header.series_number is None and header.n_instances == 0

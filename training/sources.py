"""Data sources behind one interface: IXI (folder or original tar archives), a folder of NIfTI files, DICOM
series folders, and synthetic heads from the MNI152 template.

Every source yields :class:`SourceVolume` records (a subject id, a lazy image loader, the image's true
resolution and its contrast). Splits are made per *subject* and are deterministic: a subject's split is a
function of its id and the split seed only, so adding subjects never moves existing ones, and the split is
written into the run folder (``split.json``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

IXI_NAME = re.compile(r"^(IXI\d{3})-([A-Za-z]+)-(\d+)-(T1|T2|PD)\.nii(\.gz)?$")
IXI_ARCHIVES = ("IXI-T1.tar", "IXI-T2.tar", "IXI-PD.tar")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SourceVolume:
    """One real volume a training scene can be built from."""

    subject: str
    name: str
    contrast: str
    loader: Callable[[], sitk.Image] = field(compare=False, repr=False)
    site: str = ""
    licence: str = ""

    def load(self) -> sitk.Image:
        return self.loader()


def subject_split(subject: str, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """Deterministic subject-level split from a hash of (seed, subject id)."""
    h = hashlib.sha256(f"{seed}:{subject}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def _read_nifti_bytes(data: bytes, name: str) -> sitk.Image:
    """Read a (gzipped) NIfTI held in memory (used for members of the IXI tar archives)."""
    import nibabel as nib

    fh = nib.FileHolder(fileobj=io.BytesIO(data))
    klass = nib.Nifti1Image
    if name.endswith(".gz"):
        import gzip

        fh = nib.FileHolder(fileobj=io.BytesIO(gzip.decompress(data)))
    img = klass.from_file_map({"header": fh, "image": fh})
    return nibabel_to_sitk(img)


def nibabel_to_sitk(img: object) -> sitk.Image:
    """A nibabel image as a SimpleITK image with the same physical geometry (RAS affine -> LPS)."""
    import nibabel as nib

    assert isinstance(img, nib.spatialimages.SpatialImage)
    arr = np.asarray(img.dataobj, dtype=np.float32)
    while arr.ndim > 3:
        arr = arr[..., 0]
    aff = np.asarray(img.affine, dtype=float)
    lps = np.diag([-1.0, -1.0, 1.0]) @ aff[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    out = sitk.GetImageFromArray(arr.transpose(2, 1, 0))
    out.SetSpacing([float(v) for v in spacing])
    out.SetDirection([float(v) for v in direction.ravel()])
    out.SetOrigin([float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ aff[:3, 3]])
    return out


def ixi_volumes(path: Path, sites: Sequence[str] | None = None,
                contrasts: Sequence[str] = ("T1", "T2", "PD")) -> list[SourceVolume]:
    """IXI volumes from a folder of ``IXI012-HH-1211-T1.nii.gz`` files or from the original tar archives.

    ``path`` is a folder (searched recursively, archives inside it are read too) or one ``.tar`` archive.
    ``sites``: keep only these acquisition sites (``HH`` Hammersmith, ``Guys``, ``IOP``); all by default.
    The subject id is ``IXI012``; the same subject's T1, T2 and PD volumes share it (and so their split).
    """
    wanted = {s.upper() for s in sites} if sites else None
    out: list[SourceVolume] = []

    def keep(name: str) -> tuple[str, str, str] | None:
        m = IXI_NAME.match(Path(name).name)
        if not m:
            return None
        subj, site, _, contrast = m.group(1), m.group(2), m.group(3), m.group(4)
        if wanted is not None and site.upper() not in wanted:
            return None
        if contrast not in contrasts:
            return None
        return subj, site, contrast

    archives: list[Path] = []
    if path.is_file() and tarfile.is_tarfile(path):
        archives.append(path)
    elif path.is_dir():
        for f in sorted(path.rglob("*")):
            if not f.is_file():
                continue
            if f.name.endswith(".tar") or f.name.endswith(".tar.gz"):
                archives.append(f)
                continue
            k = keep(f.name)
            if k:
                out.append(SourceVolume(k[0], f.name, k[2], _file_loader(f), site=k[1], licence="CC BY-SA 3.0"))
    else:
        raise FileNotFoundError(f"no IXI folder or archive at {path}")
    for arc in archives:
        with tarfile.open(arc) as tf:
            for member in tf.getmembers():
                k = keep(member.name)
                if k and member.isfile():
                    out.append(SourceVolume(k[0], Path(member.name).name, k[2], _tar_loader(arc, member.name),
                                            site=k[1], licence="CC BY-SA 3.0"))
    out.sort(key=lambda v: v.name)
    return out


def _file_loader(path: Path) -> Callable[[], sitk.Image]:
    def load() -> sitk.Image:
        img: sitk.Image = sitk.ReadImage(str(path))
        return img

    return load


def _tar_loader(archive: Path, member: str) -> Callable[[], sitk.Image]:
    def load() -> sitk.Image:
        with tarfile.open(archive) as tf:
            fh = tf.extractfile(member)
            if fh is None:
                raise FileNotFoundError(member)
            return _read_nifti_bytes(fh.read(), member)

    return load


def nifti_volumes(folder: Path, include: Iterable[str] = (), subjects: dict[str, str] | None = None,
                  licence: str = "") -> list[SourceVolume]:
    """Every ``*.nii[.gz]`` in a folder (``include``: keep names containing one of these strings).

    ``subjects`` maps a file-name fragment to a subject id (several files of one person share a split);
    by default each file is its own subject.
    """
    inc = list(include)
    out = []
    for f in sorted(folder.glob("*.nii*")):
        if inc and not any(s in f.name for s in inc):
            continue
        subj = f.name.split(".nii")[0]
        for frag, sid in (subjects or {}).items():
            if frag in f.name:
                subj = sid
        contrast = "T1" if "t1" in f.name.lower() else "T2" if "t2" in f.name.lower() else "PD" if "pd" in (
            f.name.lower()) else "unknown"
        out.append(SourceVolume(subj, f.name, contrast, _file_loader(f), licence=licence))
    return out


def dicom_volumes(root: Path) -> list[SourceVolume]:
    """One volume per DICOM series folder under ``root`` (SimpleITK series reader; simple series only)."""
    out = []
    for folder in sorted({p.parent for p in root.rglob("*.dcm")}):
        def load(folder: Path = folder) -> sitk.Image:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
            img: sitk.Image = reader.Execute()
            return img

        out.append(SourceVolume(folder.name, folder.name, "unknown", load))
    return out


def shared_dicom_volumes(shared: Path, include: Iterable[str]) -> list[SourceVolume]:
    """The scorable volumes of the listed ``shared/data/dicom`` series (``include``: folder names), one
    :class:`SourceVolume` per volume, named ``<series>#<index>``.

    The series is converted once per process (:func:`training.realdata.read_series`, the node's converter) and
    its volumes are cached. The subject is the manifest's scanner model, so the volumes of one series (and the
    series of one scanner) count as one subject when the bank draws real sources.
    """
    manifest = {Path(str(e["path"])).name: e for e in json.loads((shared / "manifest.json").read_text())}
    out: list[SourceVolume] = []
    for name in include:
        if name not in manifest or manifest[name].get("kind") != "dicom":
            raise ValueError(f"{name!r} is not a DICOM series of {shared / 'manifest.json'}")
        entry = manifest[name]
        if str(entry.get("subject")) != "human":
            raise ValueError(f"{name!r} is a phantom, not a head")
        folder = shared / str(entry["path"])
        subject = f"dicom:{entry.get('manufacturer_model') or name}"
        for i in range(int(entry.get("volumes_scored") or 0)):
            out.append(SourceVolume(subject, f"{name}#{i}", str(entry.get("contrast", "unknown")),
                                    _series_volume_loader(folder, i), site=str(entry.get("vendor", ""))))
    return out


_SERIES_CACHE: dict[Path, list[sitk.Image]] = {}


def _series_volume_loader(folder: Path, index: int) -> Callable[[], sitk.Image]:
    def load() -> sitk.Image:
        if folder not in _SERIES_CACHE:
            from training.realdata import read_series

            _SERIES_CACHE[folder] = read_series(folder)
        volumes = _SERIES_CACHE[folder]
        if index >= len(volumes):
            raise ValueError(f"{folder.name} has {len(volumes)} scorable volumes, not {index + 1}")
        return volumes[index]

    return load


def true_resolution(img: sitk.Image) -> tuple[float, float, float]:
    """The image's resolution along the physical (LPS) axes, in mm (a thick-slice axis stays coarse)."""
    d = np.abs(np.asarray(img.GetDirection()).reshape(3, 3))
    sp = np.asarray(img.GetSpacing())
    return tuple(float(np.max(d[i] * sp)) for i in range(3))  # type: ignore[return-value]


def prepare_source(img: sitk.Image) -> tuple[sitk.Image, tuple[float, float, float]]:
    """A real volume as a training object: float32, intensities / 99th percentile, and its true resolution."""
    img = sitk.Cast(img, sitk.sitkFloat32)
    arr = sitk.GetArrayViewFromImage(img)
    flat = np.asarray(arr).reshape(-1)[:: max(1, arr.size // 500_000)]
    p = float(np.percentile(flat[flat > 0.05 * float(np.percentile(flat, 99.9))], 99))
    out = img / max(p, 1e-6)
    out = sitk.Threshold(out, 0.0, 1e9, 0.0)
    return out, true_resolution(img)


def write_split(path: Path, volumes: Sequence[SourceVolume], seed: int, extra: dict[str, object] | None = None) -> dict[
        str, list[str]]:
    """Write ``split.json`` (subject -> split and the volume names per split) and return the split."""
    split: dict[str, list[str]] = {s: [] for s in SPLITS}
    subjects: dict[str, str] = {}
    for v in volumes:
        s = subject_split(v.subject, seed)
        subjects[v.subject] = s
        split[s].append(v.name)
    path.write_text(json.dumps({"seed": seed, "subjects": subjects, "volumes": split, **(extra or {})}, indent=2))
    return split

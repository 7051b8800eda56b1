"""The sample bank: simulated volumes, preprocessed exactly as the daemon does, stored for training.

Simulating an acquisition with k-space artifacts costs about a second of CPU per volume, training the network
on its slices costs much less, so volumes are simulated once (in parallel worker processes) into shards of
``.npy`` files and the training loop reads them back (several epochs, with cheap flips and transposes).

A volume's content depends only on (bank seed, volume index): which subject, which contrast, which acquisition,
which artifacts at which severities. The bank can be resumed: shards already written are kept.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from qc_daemon.artifacts import ARTIFACTS
from qc_daemon.imaging.preprocess import PreprocessSpec, prepare
from training.acquisition import KINDS, export_nuisance, plan_acquisition, realised_severities, simulate
from training.artifacts import Artifact, make_artifact
from training.sources import SourceVolume, prepare_source
from training.synth import EXTRA_LOW_RES_PRESETS, LOW_RES_PRESETS, PRESETS, SyntheticSubject, make_subject, render

log = logging.getLogger(__name__)
RESCAN_SEVERITY = 0.4  # a volume needs a rescan when any artifact is at least moderate
SIMULATOR = 2
# the simulator's versions (``--simulator``); the held-out test set (training.evaluate) uses none of 3 to 6
SIMULATORS: dict[int, str] = {
    1: "motion labelled by its asked severity (reproduces qc-v4)",
    2: "motion timed to, and labelled by, the change it makes to the image (Motion.target_effect)",
    3: "as 2, and clean fields of view cut the head as deeply as wrap-around folds it "
       "(plan_acquisition's deep_cuts; qc-v11 to qc-v14)",
    4: "as 3, and synthetic heads also get low tissue-contrast renders "
       "(synth.EXTRA_PRESETS: background-suppressed ASL, flat PD)",
    5: "as 4, and most 2-D EPI are simultaneous multi-slice with slice leakage (acquisition.draw_sms)",
    6: "as 5, and motion in 2-D EPI changes the tissue's excitation history (acquisition.spin_history_map), "
       "multiband slices timed band by band",
    7: "as 6, and synthetic heads have a face, skull base and neck (synth.add_face_neck: orbits, sinuses, jaw, "
       "cervical spine), so a field of view that ends in the face is seen clean",
    8: "as 7, and the clean shading of 3-D and 2-D anatomical acquisitions reaches 0.45 as that of EPI did "
       "(acquisition.CLEAN_SHADING_WIDE; real heads bring that much: training.shading)",
}
MIN_VISIBLE = 0.05  # a realised severity below this (half the mild band's floor) is labelled clean


@dataclass
class BankConfig:
    n_volumes: int
    seed: int
    synthetic_subjects: list[int]
    real_fraction: float = 0.3
    clean_fraction: float = 0.3
    severity_range: tuple[float, float] = (0.1, 1.0)
    mild_share: float = 0.5  # share of artifacts drawn from the mild band [lo, 0.4)
    jitter: int = 3
    shard_size: int = 32
    spec: dict[str, Any] = field(default_factory=lambda: PreprocessSpec().to_dict())
    kinds: tuple[str, ...] = KINDS
    acquisitions_per_render: int = 2
    simulator: int = SIMULATOR  # a version of SIMULATORS


def sample_artifacts(rng: np.random.Generator, cfg: BankConfig) -> dict[str, float]:
    """Which artifacts at which severity (multi-label; ``clean_fraction`` of volumes have none)."""
    if rng.random() < cfg.clean_fraction:
        return {}
    n = int(rng.choice([1, 2, 3], p=[0.62, 0.28, 0.10]))
    names = rng.choice(list(ARTIFACTS), size=n, replace=False)
    lo, hi = cfg.severity_range
    out = {}
    for name in names:
        s = rng.uniform(lo, min(0.4, hi)) if rng.random() < cfg.mild_share else rng.uniform(min(0.4, hi), hi)
        out[str(name)] = float(s)
    return out


class SubjectCache:
    """Synthetic subjects on disk, shared by the bank workers (and banks) of a run: each is rendered once.

    A subject depends only on its seed and on whether it has a face (simulator 7), so a stored one is the very
    subject ``make_subject`` would build again. Written to a temporary name and renamed, so a worker never reads a
    half-written subject; two workers that miss the same subject at once both render it, and the second rename
    wins with identical content.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, seed: int, face: bool) -> Path:
        return self.folder / f"subject_{seed}{'_face' if face else ''}.npz"

    def get(self, seed: int, face: bool) -> SyntheticSubject:
        path = self._path(seed, face)
        if path.exists():
            with np.load(path) as z:
                o = z["origin"]
                return SyntheticSubject(seed, z["labels"], (float(o[0]), float(o[1]), float(o[2])), z["texture"])
        subject = make_subject(seed, face=face)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, labels=subject.labels, origin=np.asarray(subject.origin), texture=subject.texture)
        os.replace(tmp, path)
        return subject


class VolumeFactory:
    """Builds simulated volumes (one worker's caches of subjects and real sources).

    Without a shared ``SubjectCache`` every subject a worker rendered stays in memory (a render takes seconds).
    With one, only the last ``HELD_SUBJECTS`` stay: reading one back takes about 0.03 s, and a face head holds about
    42 MB, so a run with a hundred synthetic heads would otherwise hold gigabytes per worker.
    """

    HELD_SUBJECTS = 4

    def __init__(self, cfg: BankConfig, real: Sequence[SourceVolume], subjects: SubjectCache | None = None) -> None:
        self.cfg = cfg
        self.spec = PreprocessSpec.from_dict(cfg.spec)
        self.real = list(real)
        self.shared_subjects = subjects
        self._subjects: dict[int, SyntheticSubject] = {}
        self._real_cache: dict[str, tuple[sitk.Image, tuple[float, float, float]]] = {}
        self._render: tuple[int, sitk.Image, str] | None = None

    def subject(self, seed: int) -> SyntheticSubject:
        if seed in self._subjects:
            subject = self._subjects.pop(seed)  # re-inserted below: the dict's order is the order of last use
        else:
            face = self.cfg.simulator >= 7
            subject = (self.shared_subjects.get(seed, face) if self.shared_subjects is not None
                       else make_subject(seed, face=face))
        self._subjects[seed] = subject
        if self.shared_subjects is not None:
            while len(self._subjects) > self.HELD_SUBJECTS:
                del self._subjects[next(iter(self._subjects))]  # least recently used; on disk, cheap to read back
        return subject

    def real_source(self, v: SourceVolume) -> tuple[sitk.Image, tuple[float, float, float]]:
        if v.name not in self._real_cache:
            self._real_cache[v.name] = prepare_source(v.load())
        return self._real_cache[v.name]

    def source_for(self, index: int) -> tuple[str, int]:
        """('real', i) or ('synthetic', subject seed) for a volume index (deterministic)."""
        rng = np.random.default_rng([self.cfg.seed, index // self.cfg.acquisitions_per_render, 1])
        if self.real and rng.random() < self.cfg.real_fraction:
            # one draw per subject, so that a subject with many volumes (a diffusion series) weighs as one;
            # with one volume per subject the draws are those of a plain draw over volumes
            groups = self._subject_groups()
            members = groups[int(rng.integers(0, len(groups)))]
            return "real", members[int(rng.integers(0, len(members)))] if len(members) > 1 else members[0]
        subj = self.cfg.synthetic_subjects
        return "synthetic", int(subj[int(rng.integers(0, len(subj)))])

    def _subject_groups(self) -> list[list[int]]:
        """Indices of ``self.real`` per subject, in order of first appearance."""
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(self.real):
            groups.setdefault(v.subject, []).append(i)
        return list(groups.values())

    def make(self, index: int) -> dict[str, Any]:
        cfg = self.cfg
        group = index // cfg.acquisitions_per_render
        rng_src = np.random.default_rng([cfg.seed, group, 2])
        rng = np.random.default_rng([cfg.seed, index, 3])
        kind = str(rng.choice(cfg.kinds, p=_kind_weights(cfg.kinds)))
        src_kind, src_i = self.source_for(index)
        if src_kind == "real":
            v = self.real[src_i]
            img, res = self.real_source(v)
            img = _random_lut(img, rng_src) if rng_src.random() < 0.5 else img
            source_name, contrast = v.name, v.contrast
        else:
            # the render is shared by the volumes of a group; its contrast suits the group's first kind
            first_kind = str(np.random.default_rng([cfg.seed, group * cfg.acquisitions_per_render, 3]).choice(
                cfg.kinds, p=_kind_weights(cfg.kinds)))
            low = first_kind in ("2d_epi", "3d_lowres")
            extra = cfg.simulator >= 4
            low_presets = LOW_RES_PRESETS + EXTRA_LOW_RES_PRESETS if extra else LOW_RES_PRESETS
            contrast_choice = str(rng_src.choice(low_presets)) if low and rng_src.random() < 0.8 else None
            if self._render is not None and self._render[0] == group:
                img, contrast = self._render[1], self._render[2]
            else:
                img, contrast = render(self.subject(src_i), rng_src, contrast_choice, low_contrast=extra)
                self._render = (group, img, contrast)
            res = (1.0, 1.0, 1.0)
            source_name = f"synthetic-{src_i}"
        plan = plan_acquisition(img, rng, kind=kind, source_res=res, deep_cuts=cfg.simulator >= 3,
                               multiband=cfg.simulator >= 5, spin_history=cfg.simulator >= 6,
                               real_shading=cfg.simulator >= 8)
        wanted = sample_artifacts(rng, cfg)
        arts: list[Artifact] = []
        for name, sev in wanted.items():
            kw: dict[str, Any] = {}
            if name == "motion":
                kw["voxel_mm"] = float(plan.spacing()[0])
                kw["fit_effect"] = cfg.simulator >= 2
            arts.append(make_artifact(name, sev, np.random.default_rng([cfg.seed, index, 4, ARTIFACTS.index(name)]),
                                      **kw))
        pv = 0.0 if src_kind == "real" else float(rng.uniform(0.35, 0.7))
        sim = simulate(img, plan, arts, object_sigma_mm=pv)
        stored, export_modes = export_nuisance(sim.image, np.random.default_rng([cfg.seed, index, 5]))
        jitter = rng.integers(-cfg.jitter, cfg.jitter + 1, self.spec.slices_per_volume) if cfg.jitter else None
        prep = prepare(stored, self.spec, jitter=jitter)
        realised = realised_severities(wanted, sim) if cfg.simulator >= 2 else dict(wanted)
        labels = np.zeros(len(ARTIFACTS), np.float32)
        severity = np.zeros(len(ARTIFACTS), np.float32)
        for name, sev in realised.items():
            # an artifact realised below the mild band's floor is no visible artifact: a clean label
            labels[ARTIFACTS.index(name)] = 1.0 if sev >= MIN_VISIBLE else 0.0
            severity[ARTIFACTS.index(name)] = sev if sev >= MIN_VISIBLE else 0.0
        return {
            "slices": prep.slices.astype(np.float16),
            "side": prep.side,
            "labels": labels,
            "severity": severity,
            "meta": {
                "index": index, "source": source_name, "contrast": contrast, "artifacts": wanted,
                "realised": realised,
                "plan": plan.describe(), "export": export_modes, "size": list(sim.image.GetSize()),
                "spacing": [round(v, 3) for v in sim.image.GetSpacing()],
            },
        }


def _kind_weights(kinds: Sequence[str]) -> np.ndarray:
    from training.acquisition import KIND_WEIGHTS

    w = np.asarray([KIND_WEIGHTS[KINDS.index(k)] for k in kinds], dtype=float)
    out: np.ndarray = w / w.sum()
    return out


def _random_lut(img: sitk.Image, rng: np.random.Generator) -> sitk.Image:
    """A random smooth intensity remapping (new contrasts from real anatomy, SynthSeg-style)."""
    arr = sitk.GetArrayFromImage(img)
    knots_x = np.linspace(0.0, 1.6, 6)
    knots_y = np.sort(rng.uniform(0, 1.2, 6)) if rng.random() < 0.5 else rng.uniform(0, 1.2, 6)
    knots_y[0] = 0.0
    out = np.interp(arr, knots_x, knots_y).astype(np.float32)
    res = sitk.GetImageFromArray(out)
    res.CopyInformation(img)
    return res


def _write_shard(out: Path, name: str, items: list[dict[str, Any]]) -> None:
    tmp = out / f".{name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "slices.npy", np.stack([i["slices"] for i in items]))
    np.save(tmp / "side.npy", np.stack([i["side"] for i in items]))
    np.save(tmp / "labels.npy", np.stack([i["labels"] for i in items]))
    np.save(tmp / "severity.npy", np.stack([i["severity"] for i in items]))
    (tmp / "meta.json").write_text(json.dumps([i["meta"] for i in items]))
    os.replace(tmp, out / name)


def _shard_names(cfg: BankConfig) -> list[tuple[str, list[int]]]:
    idx = list(range(cfg.n_volumes))
    return [(f"shard_{k:04d}", idx[k * cfg.shard_size:(k + 1) * cfg.shard_size])
            for k in range((cfg.n_volumes + cfg.shard_size - 1) // cfg.shard_size)]


def _worker(out: Path, cfg: BankConfig, real: Sequence[SourceVolume], shards: list[tuple[str, list[int]]],
            queue: Any, subjects: Path | None = None) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    factory = VolumeFactory(cfg, real, SubjectCache(subjects) if subjects is not None else None)
    for name, indices in shards:
        items = []
        for i in indices:
            items.append(factory.make(i))
            if queue is not None:
                queue.put(1)
        _write_shard(out, name, items)


def build_bank(out: Path, cfg: BankConfig, real: Sequence[SourceVolume], workers: int = 2,
               progress: bool = True, subjects: Path | None = None) -> Path:
    """Simulate ``cfg.n_volumes`` volumes into ``out`` (shards), resuming from shards already there.

    ``subjects``: a folder where the workers share their synthetic subjects (``SubjectCache``), so each is
    rendered once per run instead of once per worker; the volumes are the same with or without it."""
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "bank.json"
    cfg_json = json.dumps(asdict(cfg), indent=2, default=list)
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != json.loads(cfg_json):
        raise RuntimeError(f"{out} holds a bank with another configuration; use another folder")
    cfg_path.write_text(cfg_json)
    todo = [(n, idx) for n, idx in _shard_names(cfg) if not (out / n / "labels.npy").exists()]
    if not todo:
        return out
    from tqdm import tqdm

    n_todo = sum(len(i) for _, i in todo)
    started = time.time()
    if workers <= 1:
        bar = tqdm(total=n_todo, desc=f"bank {out.name}", unit="vol", disable=not progress)

        class _Q:
            def put(self, _: int) -> None:
                bar.update(1)

        _worker(out, cfg, real, todo, _Q(), subjects)
        bar.close()
    else:
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        # give each worker the shards whose synthetic subjects it will build (spread evenly, in order)
        parts = [todo[w::workers] for w in range(workers)]
        procs = [ctx.Process(target=_worker, args=(out, cfg, real, p, queue, subjects), daemon=True)
                 for p in parts if p]
        for p in procs:
            p.start()
        bar = tqdm(total=n_todo, desc=f"bank {out.name}", unit="vol", disable=not progress, mininterval=10.0)
        done = 0
        while done < n_todo:
            try:
                queue.get(timeout=5)
                done += 1
                bar.update(1)
            except Exception:
                if not any(p.is_alive() for p in procs):
                    break
        for p in procs:
            p.join()
        bar.close()
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"bank worker failed with exit codes {failed}")
    log.info("bank %s: %d volumes in %.0f s", out, n_todo, time.time() - started)
    return out


@dataclass
class Bank:
    """All shards of a bank, memory-mapped."""

    slices: list[np.ndarray]
    side: list[np.ndarray]
    labels: np.ndarray
    severity: np.ndarray
    meta: list[dict[str, Any]]
    index: list[tuple[int, int]]

    @classmethod
    def open(cls, folder: Path) -> Bank:
        shards = sorted(p for p in folder.glob("shard_*") if (p / "labels.npy").exists())
        if not shards:
            raise FileNotFoundError(f"no shards in {folder}")
        slices, side, labels, sev, meta, index = [], [], [], [], [], []
        for s, p in enumerate(shards):
            slices.append(np.load(p / "slices.npy", mmap_mode="r"))
            side.append(np.load(p / "side.npy"))
            lab = np.load(p / "labels.npy")
            labels.append(lab)
            sev.append(np.load(p / "severity.npy"))
            meta.extend(json.loads((p / "meta.json").read_text()))
            index.extend((s, j) for j in range(len(lab)))
        return cls(slices, side, np.concatenate(labels), np.concatenate(sev), meta, index)

    def __len__(self) -> int:
        return len(self.index)

    def get_slice(self, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One network input slice (3, S, S) of volume ``i`` and its side input (3,)."""
        s, j = self.index[i]
        return np.asarray(self.slices[s][j, k], dtype=np.float32), self.side[s][j, k]

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, j = self.index[i]
        return np.asarray(self.slices[s][j], dtype=np.float32), self.side[s][j]


__all__ = ["PRESETS", "Bank", "BankConfig", "SubjectCache", "VolumeFactory", "build_bank", "sample_artifacts"]

"""Ingest benchmark: instances per second received by the node's receivers and by dcmtk's storescp, same run.

    .venv/bin/python bench/ingest.py [--instances 600] [--rounds 3] [--no-fsync-row] [--baseline] [--real]
                                     [--profile] [--json out.json]

Generates ``--instances`` MR instances of about 137 KiB (the Philips T1 series of ``shared/data`` with new UIDs, in 4
series) in a temporary folder, then, for each round and each receiver, starts a fresh receiver and times ``storescu``
(``TCP_NODELAY=1``) sending everything over 1 association, then the 4 series over 4 parallel associations (a fresh
receiver again). Receivers:

- ``storescp``: ``storescp +B -pdu 131072`` (bit-preserving writes, no fsync; one association at a time),
- ``storescp --fork``: the same with one process per association (its way to serve parallel associations),
- ``node``: the node's ``run_receiver`` processes exactly as ``qc-daemon serve`` starts them (settings defaults:
  ``receiver_processes`` = one per core up to 4, fsync on, 128 KiB PDU; ``QC_*`` variables override), with a thread
  draining the event queue in place of the bookkeeper;
- with ``--no-fsync-row``: the node with ``fsync = false`` (not durable), to show what durability costs here;
- with ``--baseline``: a plain pynetdicom SCP with the same durable writes (``bench/_plain_scp.py``).

Prints the median rates, the node/storescp ratios (against the faster storescp) and the node's CPU per instance.
Numbers move with the machine's load: compare only within one run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _dicomdata import DEFAULT_SOURCE, make_mr_instances
from _peers import (
    DCMTK_ENV,
    Receiver,
    cpu_seconds,
    node_receivers,
    plain_pynetdicom,
    reset_dir,
    send_with_storescu,
    storescp,
)

SHARED_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"
ReceiverFactory = Callable[[Path], AbstractContextManager[Receiver]]


def _receivers(with_no_fsync: bool, with_baseline: bool) -> dict[str, ReceiverFactory]:
    factories: dict[str, ReceiverFactory] = {
        "storescp": lambda d: storescp(d, fork=False),
        "storescp --fork": lambda d: storescp(d, fork=True),
        "node": lambda d: node_receivers(d),
    }
    if with_no_fsync:
        factories["node, fsync off"] = lambda d: node_receivers(d, {"QC_FSYNC": "false"})
    if with_baseline:
        factories["pynetdicom, plain"] = lambda d: plain_pynetdicom(d)
    return factories


def durable_write_latency(folder: Path, size: int, count: int = 100) -> float:
    """Median milliseconds of one spool-style durable write here: write, fdatasync, link, fsync of the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    times = []
    for i in range(count):
        started = time.perf_counter()
        tmp = folder / f"{i}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.fdatasync(fd)
        os.close(fd)
        os.link(tmp, folder / f"{i}.dcm")
        os.unlink(tmp)
        dir_fd = os.open(folder, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
        times.append(time.perf_counter() - started)
    shutil.rmtree(folder)
    return 1000 * statistics.median(times)


def _wait_count(receiver: Receiver, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    count = receiver.count()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        count = receiver.count()
    return int(count)


def _measure(
    factory: ReceiverFactory, work: Path, groups: Sequence[Sequence[Path]], profile_dir: Path | None = None
) -> dict[str, Any]:
    expected = sum(len(g) for g in groups)
    with factory(reset_dir(work)) as receiver:
        cpu_before = {pid: cpu_seconds(pid) for pid in receiver.pids}
        spies = _start_profilers(receiver.pids, profile_dir) if profile_dir else []
        elapsed = send_with_storescu(receiver.port, receiver.aet, groups)
        cpu = sum(cpu_seconds(pid) - before for pid, before in cpu_before.items())
        for spy in spies:
            spy.wait(30)
        got = _wait_count(receiver, expected)
        if got != expected:
            raise RuntimeError(f"{receiver.name}: {got} instances stored, {expected} sent")
        return {"seconds": elapsed, "rate": expected / elapsed, "cpu_ms_per_instance": 1000 * cpu / expected}


def _start_profilers(pids: Sequence[int], out_dir: Path) -> list[subprocess.Popen[bytes]]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir.mkdir(parents=True, exist_ok=True)
    record = [py_spy, "record", "-f", "raw", "-r", "1000", "-d", "4", "--gil"]
    spies = [
        subprocess.Popen(
            [*record, "-p", str(pid), "-o", str(out_dir / f"{pid}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    time.sleep(1.0)  # py-spy attaches
    return spies


def summarize_profile(files: Sequence[Path], top: int = 25) -> str:
    """Self and inclusive sample shares (GIL held) of a py-spy ``raw`` profile."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for file in files:
        for line in file.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = stack.split(";")
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples with the GIL held", "self:"]
    lines += [f"  {100 * n / total:5.1f}% {name}" for name, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}% {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _real_data_rates(tmp: Path) -> dict[str, float]:
    """``dcmsend +sd +r`` of shared/data/dicom (1,027 files, every transfer syntax) over 1 association."""
    files = sum(1 for p in SHARED_DICOM.rglob("*.dcm"))
    rates: dict[str, float] = {}
    factories: dict[str, ReceiverFactory] = {
        "storescp": lambda d: _storescp_all_syntaxes(d),
        "node": lambda d: node_receivers(d),
    }
    for name, factory in factories.items():
        with factory(reset_dir(tmp / f"real-{name.replace(' ', '_')}")) as receiver:
            started = time.perf_counter()
            subprocess.run(
                ["dcmsend", "-aec", receiver.aet, "+sd", "+r", "127.0.0.1", str(receiver.port), str(SHARED_DICOM)],
                env=DCMTK_ENV,
                check=True,
                capture_output=True,
            )
            rates[name] = files / (time.perf_counter() - started)
            if _wait_count(receiver, files) != files:
                raise RuntimeError(f"{name}: not every file of shared/data arrived")
    return rates


def _storescp_all_syntaxes(out_dir: Path) -> AbstractContextManager[Receiver]:
    import contextlib

    from _peers import free_port, wait_for_echo

    @contextlib.contextmanager
    def run() -> Iterator[Receiver]:
        port = free_port()
        proc = subprocess.Popen(
            ["storescp", "+B", "+xa", "-pdu", "131072", "-od", str(out_dir), "-aet", "STORESCP", str(port)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_echo(port, "STORESCP")
            yield Receiver(
                "storescp +xa", port, "STORESCP", [proc.pid], lambda: len(list(out_dir.iterdir())), proc.terminate
            )
        finally:
            proc.terminate()
            proc.wait(10)

    return run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--real", action="store_true", help="also send shared/data/dicom with dcmsend")
    parser.add_argument("--profile", action="store_true", help="py-spy the node during one extra 4-association run")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--no-fsync-row", action="store_true", help="also measure the node with fsync off")
    parser.add_argument("--baseline", action="store_true", help="also measure a plain pynetdicom SCP (durable)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="qc-bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        groups = make_mr_instances(tmp / "data", args.instances, 4, args.source)
        everything = [[p for g in groups for p in g]]
        size = sum(p.stat().st_size for g in groups for p in g) / args.instances
        for group in groups:  # warm the page cache so the first receiver is not penalised
            for path in group:
                path.read_bytes()
        load = os.getloadavg()[0]
        print(f"{args.instances} instances of {size / 1024:.0f} KiB, {args.rounds} rounds, {os.cpu_count()} CPUs, "
              f"load average {load:.2f} before the run")

        results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        factories = _receivers(args.no_fsync_row, args.baseline)
        latencies = [durable_write_latency(tmp / "probe-fsync", int(size))]
        for round_no in range(args.rounds):
            order = list(factories) if round_no % 2 == 0 else list(reversed(factories))
            for name in order:
                for label, work_groups in (("1", everything), ("4", groups)):
                    result = _measure(factories[name], tmp / "recv", work_groups)
                    results.setdefault(name, {}).setdefault(label, []).append(result)
                    print(f"  round {round_no + 1} {name:16s} {label} assoc: {result['rate']:7.1f} inst/s", flush=True)
            latencies.append(durable_write_latency(tmp / "probe-fsync", int(size)))

        node_info = {}
        with node_receivers(reset_dir(tmp / "probe")) as probe:
            node_info = probe.extra

        table = _table(results, node_info) if results else ""
        print()
        print(table)
        fsync_ms = statistics.median(latencies)
        print(f"load average {os.getloadavg()[0]:.2f} after the run (other users of this machine count too)")
        print(f"\ndurable write of one instance here (write, fdatasync, link, fsync folder): {fsync_ms:.2f} ms median")
        report: dict[str, Any] = {"instances": args.instances, "rounds": args.rounds, "results": results,
                                  "node": node_info, "table": table, "durable_write_ms": fsync_ms}
        if args.real:
            report["real_data"] = _real_data_rates(tmp)
            print("\nshared/data/dicom, dcmsend +sd +r, 1 association: "
                  + ", ".join(f"{k} {v:.0f} files/s" for k, v in report["real_data"].items()))
        if args.profile:
            profile_dir = tmp / "profile"
            _measure(factories["node"], tmp / "recv", groups, profile_dir)
            summary = summarize_profile(sorted(profile_dir.glob("*.txt")))
            report["profile"] = summary
            print("\nnode profile, 4 associations:\n" + summary)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    return 0


def _median(rows: list[dict[str, Any]], key: str = "rate") -> float:
    return float(statistics.median(r[key] for r in rows))


def _table(results: dict[str, dict[str, list[dict[str, Any]]]], node_info: dict[str, Any]) -> str:
    lines = [
        "| receiver | 1 association (inst/s) | 4 associations (inst/s) |",
        "|---|---|---|",
    ]
    for name, by_label in results.items():
        label = name
        if name == "node":
            label = f"node ({node_info.get('processes')} receiver processes, fsync {node_info.get('fsync')})"
        elif name == "node, fsync off":
            label = "node, fsync off (not durable; for comparison only)"
        elif name == "pynetdicom, plain":
            label = "plain pynetdicom SCP, fsync (the starting point)"
        lines.append(f"| {label} | {_median(by_label['1']):.0f} | {_median(by_label['4']):.0f} |")
    best = {
        n: max(_median(results[r][n]) for r in results if r.startswith("storescp")) for n in ("1", "4")
    }
    node = {n: _median(results["node"][n]) for n in ("1", "4")}
    ratio = {n: node[n] / best[n] for n in ("1", "4")}
    lines.append(f"| **ratio node / best storescp** | **{ratio['1']:.2f}** | **{ratio['4']:.2f}** |")
    cpu = {n: _median(results["node"][n], "cpu_ms_per_instance") for n in ("1", "4")}
    lines.append(f"| node CPU per instance (ms, all receiver processes) | {cpu['1']:.2f} | {cpu['4']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

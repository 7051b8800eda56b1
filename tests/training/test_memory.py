"""training.memory: freed memory stays in the process, so a big array's pages are not faulted in again and again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# In a fresh process: allocate, write and free a 96 MiB array ten times; count the page faults of the loop.
CHILD = """
import json, resource, sys
sys.path.insert(0, {repo!r})
import numpy as np
from training.memory import keep_freed_memory
kept = keep_freed_memory() if {keep} else False
def cycle():
    a = np.empty(96 * 2**20, np.uint8)
    a.fill(1)
    return int(a[::4096].sum())
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
total = sum(cycle() for _ in range(10))
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({{"kept": kept, "faults": after - before, "total": total}}))
"""


def _faults(keep: bool) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), keep=keep)], check=True,
                         capture_output=True, text=True).stdout
    res: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return res


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_kept_memory_is_not_faulted_in_again() -> None:
    returned, kept = _faults(False), _faults(True)
    assert kept["kept"] is True and returned["kept"] is False
    assert returned["total"] == kept["total"] == 10 * 96 * 2**20 // 4096  # same work either way
    huge_pages = 96 * 2**20 // 2**21  # 48: the fewest faults one fresh mapping costs, even in 2 MiB pages
    # returned to the kernel: every cycle maps fresh zeroed pages
    assert returned["faults"] >= 10 * huge_pages, returned
    # kept: the heap's pages are reused; fewer faults in ten cycles than one fresh mapping costs
    assert kept["faults"] < huge_pages, kept


def test_the_training_command_keeps_freed_memory_unless_told(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``python -m training.train`` applies the setting (to its own process only: tests call ``train()``)."""
    from training import train

    calls: list[bool] = []
    seen: list[bool] = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.setattr(train, "train", lambda args: seen.append(args.freed_memory_kept) or tmp_path)
    assert train.main(["--out", str(tmp_path)]) == 0
    assert train.main(["--out", str(tmp_path), "--return-freed-memory"]) == 0
    assert calls == [True] and seen == [True, False]

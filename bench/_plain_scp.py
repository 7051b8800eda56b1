"""Baseline for bench/ingest.py: a plain pynetdicom SCP (no fast path) with the same durable writes.

    python bench/_plain_scp.py PORT OUT_DIR

Writes ``event.encoded_dataset()`` to a temporary file, fsyncs it, renames it into OUT_DIR and fsyncs the folder,
then answers; 128 KiB maximum PDU, every storage SOP class in the usual uncompressed syntaxes. This is what the
node's receiver started from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def main() -> None:
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)

    def on_store(event: Any) -> int:
        tmp = out / f".{event.request.AffectedSOPInstanceUID}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, event.encoded_dataset())
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, out / f"{event.request.AffectedSOPInstanceUID}.dcm")
        dir_fd = os.open(out, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
        return 0x0000

    ae = AE("PLAINSCP")
    ae.maximum_pdu_size = 131072
    ae.maximum_associations = 16
    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, syntaxes)
    ae.add_supported_context(Verification)
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, on_store)])


if __name__ == "__main__":
    main()

"""The receiving edge: DICOM listener (C-STORE/C-ECHO SCP), spool, quarantine and the C-STORE sender.

Public API (see ``docs/architecture.md``): :func:`run_receiver`, :func:`make_receiver_shared`,
:class:`ReceiverOptions`, :class:`Spool`, :class:`SpooledInstance`, :class:`QuarantinedFile`, :func:`send_paths`.
Import pynetdicom-heavy pieces from their modules (``qc_daemon.ingest.scp``, ``qc_daemon.ingest.sender``).
"""

from qc_daemon.ingest.events import EventSink, QuarantinedFile, SpooledInstance
from qc_daemon.ingest.limits import ReceiverShared, make_receiver_shared
from qc_daemon.ingest.options import ReceiverOptions
from qc_daemon.ingest.spool import Spool

__all__ = [
    "EventSink",
    "QuarantinedFile",
    "ReceiverOptions",
    "ReceiverShared",
    "Spool",
    "SpooledInstance",
    "make_receiver_shared",
]

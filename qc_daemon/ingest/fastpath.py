"""Event-driven replacements for pynetdicom's polling loops (the only module that touches pynetdicom internals).

pynetdicom 3.0 runs two threads per association that poll: the DUL reactor sleeps 1 ms whenever a loop found
nothing to do, the association reactor sleeps 1 ms on every loop, ``AssociationSocket.recv`` reads 4 KiB at a time,
every DIMSE command set is decoded and encoded with pydicom, and each C-STORE crosses from the DUL thread to the
association thread and back. The classes below keep pynetdicom's state machine, ACSE and service classes and change
only how the threads wait and how the C-STORE request/response pair is carried:

- ``_FastDUL.run_reactor``: the same loop as ``DULServiceProvider.run_reactor`` but it blocks in ``select`` on the
  peer socket and a wake-up pipe instead of sleeping; anything that queues work for the DUL from another thread
  (``send_pdu``, events put on its event queue, ``kill_dul``/``stop_dul``) writes to the pipe.
- ``_FastAssociation._run_reactor``: the same checks as ``Association._run_reactor`` but it blocks on a
  ``threading.Event`` set whenever a DIMSE message, an ACSE primitive or the end of the DUL thread arrives.
- ``_InlineMessages``: C-STORE and C-ECHO requests are served on the DUL thread as soon as they are complete (no
  thread hand-over in either direction); the association's ``abort`` is non-blocking meanwhile, as pynetdicom makes
  it inside event handlers.
- ``_FastDIMSE``: C-STORE-RQ command sets parsed by hand (:func:`parse_c_store_rq`) and C-STORE-RSP encoded by hand
  (:func:`encode_c_store_rsp`, byte-identical to pynetdicom's); anything else goes through pynetdicom, and so does
  everything while an EVT_DIMSE_RECV / EVT_DIMSE_SENT handler is bound.
- ``_FastSocket.recv``: ``recv_into`` one buffer of the full requested size instead of 4 KiB ``recv`` calls.
- ``_FastRequestHandler``: pynetdicom's ``_create_association`` with the classes above, TCP_NODELAY on the accepted
  socket, and the TLS handshake on the connection's own thread with a timeout (pynetdicom does it on the listener
  thread without one, so a silent client would block every other connection).
- ``_FastServer``: ``SO_REUSEPORT`` so several receiving processes share one port, and a listen backlog of 128.

Each overridden method was copied from pynetdicom 3.0.4 and changed only where marked ``# qc:``. The fingerprints in
:data:`PINNED_SOURCES` (sha256 of ``inspect.getsource``) are checked by ``tests/ingest/test_fastpath.py``: when
pynetdicom changes one of the methods replaced or relied upon here, the test fails and this module must be reviewed
against the new version (then the pins updated). Measurements: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from copy import deepcopy
from datetime import datetime
from io import BytesIO
from typing import Any, cast

from pynetdicom import _config, evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

LOGGER = logging.getLogger("pynetdicom.dul")

#: pynetdicom version this module was written against, and sha256 of the source of every method it replaces
#: (``inspect.getsource``), checked by the tests.
PINNED_VERSION = "3.0.4"
PINNED_SOURCES: dict[str, str] = {
    "pynetdicom.dul.DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "pynetdicom.dul.DULServiceProvider.send_pdu": "7cbce5da8594124e",
    "pynetdicom.dul.DULServiceProvider.kill_dul": "5ceccf8dd01c2072",
    "pynetdicom.dul.DULServiceProvider.stop_dul": "28a7e0be126e7b30",
    "pynetdicom.association.Association._run_reactor": "f28838c5559e462a",
    "pynetdicom.association.Association.kill": "8f9713666a7f4cff",
    "pynetdicom.association.Association.__init__": "eb07516b8009ad8f",
    "pynetdicom.association.Association._serve_request": "2f24c1759cdf6c8c",
    "pynetdicom.dimse.DIMSEServiceProvider.send_msg": "a839cf2fb46976d9",
    "pynetdicom.dimse.DIMSEServiceProvider.receive_primitive": "5f99c86b14a15cef",
    "pynetdicom.dimse_messages.DIMSEMessage.encode_msg": "73000c902c52832d",
    "pynetdicom.service_class.StorageServiceClass.SCP": "63afca7fc6c6e7ee",
    "pynetdicom.transport.AssociationSocket.recv": "6bc20a33b1b7cfe7",
    "pynetdicom.transport.RequestHandler._create_association": "05c8d12b79863cdb",
    "pynetdicom.transport.AssociationServer.server_bind": "cf69278a05a5c777",
    "pynetdicom.transport.AssociationServer.get_request": "925a4f3a3042f6e4",
    "pynetdicom.transport.RequestHandler.handle": "034823fb4df3a874",
    "pynetdicom.dul.DULServiceProvider.__init__": "c82dafa9438ddf70",
    "pynetdicom.association.Association.run_reactor": "ed8bbbe3b3d6ddae",
    "pynetdicom.dimse_messages.DIMSEMessage.decode_msg": "f51c777e841a76be",
    "pynetdicom.dimse_messages.DIMSEMessage.message_to_primitive": "f8f43d34e43450ef",
    "pynetdicom.presentation.negotiate_unrestricted": "344f31fc8c738793",
}

# Longest a reactor blocks without any wake-up; only timers (ARTIM, network idle) depend on it.
_MAX_WAIT = 0.25


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom settings for a receiving process (call before creating the AE).

    - ``UNRESTRICTED_STORAGE_SERVICE``: accept every storage SOP class, private and future ones included, in the
      transfer syntax the peer proposes first; the receiver stores bytes as received and never decodes pixel data.
    - ``LOG_HANDLER_LEVEL = "none"``: pynetdicom's default handlers format every PDU and DIMSE message for DEBUG
      logs, even when nothing is logged (about a tenth of the CPU per instance).
    """
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    _config.LOG_HANDLER_LEVEL = "none"


class _Waker:
    """A self-pipe: ``wake()`` from any thread makes a ``select`` on :attr:`fd` return.

    Writes and the final close happen under one lock so a late ``wake()`` can never write into a reused fd.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._closed = False

    @property
    def fd(self) -> int:
        return self._r

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            # a full pipe means the reader is already due to wake up
            with contextlib.suppress(BlockingIOError):
                os.write(self._w, b"\0")

    def drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._r)
            os.close(self._w)


class _WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A ``queue.Queue`` that calls ``on_put`` after every put."""

    def __init__(self, on_put: Callable[[], None]) -> None:
        super().__init__()
        self._on_put = on_put

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._on_put()


class _FastDUL(DULServiceProvider):
    """DUL service provider whose reactor waits in ``select`` instead of sleeping."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._waker = _Waker()
        self._reactor_ident: int | None = None
        self.to_provider_queue = _WakingQueue(self._wake_from_other_thread)
        self.event_queue = _WakingQueue(self._wake_from_other_thread)
        self.to_user_queue = _WakingQueue(cast(_FastAssociation, assoc)._wake.set)

    def _wake_from_other_thread(self) -> None:
        if threading.get_ident() != self._reactor_ident:
            self._waker.wake()

    def kill_dul(self) -> None:
        self._kill_thread = True
        self._waker.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._waker.wake()
            if self.is_alive() and threading.current_thread() is not self:
                self.join()  # qc: join instead of polling is_alive()
            return True
        return False

    def _wait_for_activity(self) -> None:
        """Block until the peer sent data, another thread queued work, or a timer may have expired."""
        timeout = _MAX_WAIT
        remaining = self.artim_timer.remaining
        if 0 < remaining < timeout:
            timeout = remaining + 0.001
        fds: list[Any] = [self._waker.fd]
        assoc_sock = self.socket
        sock = getattr(assoc_sock, "socket", None)
        if sock is not None and getattr(assoc_sock, "_is_connected", False):
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # decrypted bytes already buffered: select would not see them
            fds.append(sock)
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            return  # the socket was closed under us: the next loop notices it
        if self._waker.fd in ready:
            self._waker.drain()

    def run_reactor(self) -> None:
        """``DULServiceProvider.run_reactor`` without the sleep (see the module docstring)."""
        self._reactor_ident = threading.get_ident()
        self._idle_timer.start()
        self.socket = cast("AssociationSocket", self.socket)
        idle = False
        try:
            while True:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()

                if idle:
                    self._wait_for_activity()  # qc: was time.sleep(self._run_loop_delay)

                if self._kill_thread:
                    break

                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")

                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception as exc:
                    LOGGER.error("Exception in DUL.run(), aborting association")
                    LOGGER.exception(exc)
                    abort_pdu = A_ABORT_RQ()
                    abort_pdu.source = 0x02
                    abort_pdu.reason_diagnostic = 0x00
                    self.socket.send(abort_pdu.encode())
                    self.assoc.is_aborted = True
                    self.assoc.is_established = False
                    self.assoc._kill = True
                    self._kill_thread = True
                    return

                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    idle = True
                    continue

                self.state_machine.do_action(event)
                idle = False
        finally:
            self._waker.close()  # qc: release the pipe and tell the association reactor
            cast(_FastAssociation, self.assoc)._wake.set()


class _FastAssociation(Association):
    """An acceptor association whose reactor blocks on an event instead of polling every millisecond."""

    def __init__(self, ae: ApplicationEntity, mode: str) -> None:
        self._wake = threading.Event()
        super().__init__(ae, mode)
        # qc: replace the DUL and DIMSE providers before anything started; re-apply the timeouts set on the old DUL
        self.dul = _FastDUL(self)
        self.network_timeout = self._network_timeout
        self.acse_timeout = self._acse_timeout
        self.dimse = _FastDIMSE(self)
        self.dimse.msg_queue = _InlineMessages(self)
        #: callables run once, with this association, when its thread ends (released, aborted or rejected)
        self.on_finish: list[Callable[[Association], None]] = []

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            if not self._started_dul and isinstance(self.dul, _FastDUL):
                self.dul._waker.close()  # the DUL thread never ran, so it cannot close its pipe itself
            for callback in self.on_finish:
                try:
                    callback(self)
                except Exception:  # a failing callback must not hide the others
                    logging.getLogger(__name__).exception("association finish callback failed")

    def kill(self) -> None:
        self._kill = True
        self._wake.set()
        super().kill()

    def _run_reactor(self) -> None:
        """``Association._run_reactor`` waiting on :attr:`_wake` (see the module docstring)."""
        self._is_paused = False
        busy = False
        while not self._kill:
            if not busy:
                self._wake.wait(_MAX_WAIT)  # qc: was time.sleep(0.001)
            self._wake.clear()
            busy = False

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                busy = True  # qc: more messages may be queued; look again before waiting

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                logging.getLogger("pynetdicom.association").info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                logging.getLogger("pynetdicom.association").info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self._sent_abort and self.is_aborted:  # qc: an abort sent while serving inline (non-blocking)
                self.kill()
                return

            if self.dul.idle_timer_expired():
                logging.getLogger("pynetdicom.association").error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()

                self.kill()
                return


class _InlineMessages(_WakingQueue):
    """The DIMSE message queue: C-STORE and C-ECHO requests are served at once, on the DUL thread.

    pynetdicom hands each complete DIMSE message from the DUL thread to the association thread and the response
    back again; on a small virtual machine each of these wake-ups costs more than writing the instance. Serving the
    two request types this node supports where they are decoded removes both hand-overs. While a request is served
    the association's ``abort`` is non-blocking (as pynetdicom does inside event handlers), because a blocking abort
    waits for the DUL thread. Any other message goes to the association thread as before.
    """

    def __init__(self, assoc: _FastAssociation) -> None:
        super().__init__(assoc._wake.set)
        self._assoc = assoc

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        context_id, msg = item
        assoc = self._assoc
        if (
            type(msg) in (C_STORE, C_ECHO)
            and msg.MessageIDBeingRespondedTo is None
            and assoc.is_established
            and context_id in assoc._accepted_cx
        ):
            assoc.abort = assoc._abort_nonblocking  # type: ignore[method-assign]
            try:
                assoc._serve_request(msg, context_id)
            finally:
                assoc.__dict__.pop("abort", None)
            if assoc.is_aborted:
                assoc._wake.set()
            return
        super().put(item, block, timeout)


def _implicit_element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


def _uid_value(uid: str) -> bytes:
    value = uid.encode("ascii")
    return value + b"\0" if len(value) % 2 else value


def encode_c_store_rsp(rsp: C_STORE) -> bytes | None:
    """The implicit VR little endian command set of a C-STORE-RSP, or None where only pynetdicom can encode it.

    Equivalent to pynetdicom's ``C_STORE_RSP`` encoding (checked by the tests) without building pydicom datasets.
    """
    status = rsp.Status
    sop_class = rsp.AffectedSOPClassUID
    sop_instance = rsp.AffectedSOPInstanceUID
    responded_to = rsp.MessageIDBeingRespondedTo
    if status is None or responded_to is None or not sop_class or not sop_instance or rsp.OffendingElement:
        return None
    parts = [
        _implicit_element(0x00000002, _uid_value(str(sop_class))),
        _implicit_element(0x00000100, struct.pack("<H", 0x8001)),
        _implicit_element(0x00000120, struct.pack("<H", responded_to)),
        _implicit_element(0x00000800, struct.pack("<H", 0x0101)),
        _implicit_element(0x00000900, struct.pack("<H", status)),
    ]
    if rsp.ErrorComment:
        comment = str(rsp.ErrorComment).encode("ascii", "replace")
        parts.append(_implicit_element(0x00000902, comment + b" " if len(comment) % 2 else comment))
    parts.append(_implicit_element(0x00001000, _uid_value(str(sop_instance))))
    body = b"".join(parts)
    return _implicit_element(0x00000000, struct.pack("<L", len(body))) + body


_STORE_RQ_TAGS = {
    0x00000000: "group",
    0x00000002: "sop_class",
    0x00000100: "command",
    0x00000110: "message_id",
    0x00000700: "priority",
    0x00000800: "dataset_type",
    0x00001000: "sop_instance",
    0x00001030: "move_aet",
    0x00001031: "move_id",
}


def parse_c_store_rq(command_set: bytes) -> dict[str, bytes] | None:
    """The raw values of a C-STORE-RQ command set (implicit VR LE), or None if it is anything else.

    None also for any element a C-STORE-RQ does not have, a missing mandatory one, or no data set: such messages go
    through pynetdicom's own decoding.
    """
    values: dict[str, bytes] = {}
    pos, end = 0, len(command_set)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHL", command_set, pos)
        name = _STORE_RQ_TAGS.get((group << 16) | element)
        pos += 8
        if name is None or pos + length > end:
            return None
        values[name] = command_set[pos : pos + length]
        pos += length
    try:
        if (
            struct.unpack("<H", values["command"])[0] != 0x0001
            or struct.unpack("<H", values["dataset_type"])[0] == 0x0101
            or len(values["message_id"]) != 2
            or len(values["priority"]) != 2
            or not values["sop_class"]
            or not values["sop_instance"]
        ):
            return None
    except (KeyError, struct.error):
        return None
    return values


def _ui(raw: bytes) -> str:
    return raw.decode("ascii").rstrip("\0 ").strip()


def _c_store_primitive(values: dict[str, bytes], dataset: BytesIO, context_id: int) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = struct.unpack("<H", values["message_id"])[0]
    primitive.AffectedSOPClassUID = _ui(values["sop_class"])
    primitive.AffectedSOPInstanceUID = _ui(values["sop_instance"])
    primitive.Priority = struct.unpack("<H", values["priority"])[0]
    if values.get("move_aet"):
        primitive.MoveOriginatorApplicationEntityTitle = values["move_aet"].decode("ascii").strip()
    if len(values.get("move_id", b"")) == 2:
        primitive.MoveOriginatorMessageID = struct.unpack("<H", values["move_id"])[0]
    primitive.DataSet = dataset
    primitive._context_id = context_id
    return primitive


class _FastDIMSE(DIMSEServiceProvider):
    """DIMSE provider with a hand-written path for the C-STORE request / response pair.

    ``receive_primitive`` assembles C-STORE-RQ messages itself (command set parsed by :func:`parse_c_store_rq`,
    data set fragments appended to one ``BytesIO``) instead of decoding every command set with pydicom; any other
    message, or anything unusual, goes through pynetdicom's ``DIMSEMessage`` as before. ``send_msg`` encodes
    C-STORE responses with :func:`encode_c_store_rsp`. Both are used only while no EVT_DIMSE_RECV / EVT_DIMSE_SENT
    handler is bound (those handlers expect pynetdicom's message objects).
    """

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._command = bytearray()
        self._store: dict[str, bytes] | None = None
        self._store_context = 0
        self._store_data = BytesIO()
        self._max_pdu: int | None = None

    def receive_primitive(self, primitive: P_DATA) -> None:
        if self.message is not None or self.assoc.get_handlers(evt.EVT_DIMSE_RECV):
            super().receive_primitive(primitive)
            return
        pdvs = primitive.presentation_data_value_list
        for index, (context_id, data) in enumerate(pdvs):
            header = data[0]
            if self._store is None:
                if not header & 1:  # data before any command: let pynetdicom deal with it
                    self._fall_back(pdvs[index:])
                    return
                self._command += memoryview(data)[1:]
                if not header & 2:
                    continue
                values = parse_c_store_rq(bytes(self._command))
                if values is None:
                    self._fall_back(pdvs[index:], include_current_command=True)
                    return
                self._command.clear()
                self._store, self._store_context, self._store_data = values, context_id, BytesIO()
                continue
            if header & 1 or context_id != self._store_context:
                logging.getLogger("pynetdicom.dimse").error("Received an invalid DIMSE message")
                self._reset()
                self.dul.event_queue.put("Evt19")
                return
            self._store_data.write(memoryview(data)[1:])
            if header & 2:
                values, dataset, cx = self._store, self._store_data, self._store_context
                self._reset()
                try:
                    message = _c_store_primitive(values, dataset, cx)
                except Exception as exc:
                    logging.getLogger("pynetdicom.dimse").error("Received an invalid DIMSE message: %s", exc)
                    self.dul.event_queue.put("Evt19")
                    return
                self.msg_queue.put((cx, message))

    def _reset(self) -> None:
        self._command = bytearray()
        self._store = None
        self._store_data = BytesIO()

    def _fall_back(self, pdvs: list[Any], include_current_command: bool = False) -> None:
        """Hand the message so far to pynetdicom's own assembler."""
        rest: Any = [[context_id, bytes(data)] for context_id, data in pdvs]  # the setter wants [int, bytes]
        if include_current_command:
            rest[0][1] = b"\x03" + bytes(self._command)
        self._command = bytearray()
        replay = P_DATA()
        replay.presentation_data_value_list = rest
        super().receive_primitive(replay)  # like pynetdicom, only the first complete message of a P-DATA counts

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if type(primitive) is C_STORE and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            encoded = encode_c_store_rsp(primitive)
            if self._max_pdu is None:  # fixed once the association is negotiated; the lookup is not free
                self._max_pdu = self.maximum_pdu_size
            max_length = self._max_pdu
            if encoded is not None and (not max_length or len(encoded) + 6 <= max_length):
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)


class _FastSocket(AssociationSocket):
    """``AssociationSocket`` reading a whole PDU with ``recv_into`` instead of 4 KiB ``recv`` calls."""

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        nr_read = 0
        while nr_read < nr_bytes:
            got = sock.recv_into(view[nr_read:], nr_bytes - nr_read)
            if not got:  # connection closed: return what we have, as pynetdicom does
                view.release()
                del buffer[nr_read:]
                return buffer
            nr_read += got
        view.release()
        return buffer


class _FastRequestHandler(RequestHandler):
    """pynetdicom's request handler creating :class:`_FastAssociation` with a :class:`_FastSocket`.

    With TLS, the handshake happens here, on the connection's own thread and bounded by the ACSE timeout (pynetdicom
    does it on the listener thread without a timeout, so one silent client would stop all accepting).
    """

    def handle(self) -> None:
        sock = self.request
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.settimeout(self.ae.acse_timeout or 30)
                sock.do_handshake()
                sock.settimeout(None)
            except (OSError, ValueError) as exc:
                peer = f"{self.client_address[0]}:{self.client_address[1]}"
                logging.getLogger("qc_daemon.ingest").warning("TLS handshake failed: %s", exc, extra={"peer": peer})
                with contextlib.suppress(OSError):
                    sock.close()
                return
        super().handle()

    def _create_association(self) -> Association:
        assoc = _FastAssociation(self.ae, "acceptor")  # qc: subclass
        assoc._server = self.server

        timestamp = datetime.strftime(datetime.now(), "%Y%m%d%H%M%S")
        assoc.name = f"AcceptorThread@{timestamp}"

        with contextlib.suppress(OSError, AttributeError):  # qc: small responses must not wait for delayed ACKs
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = _FastSocket(assoc, client_socket=self.request)  # qc: subclass
        assoc.set_socket(sock)

        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)

        assoc.requestor.address_info = self.remote

        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    handler = cast(Any, handler)
                    assoc.bind(event, handler[0], handler[1])

        finish = getattr(self.server, "on_association_finish", None)
        if finish is not None:
            assoc.on_finish.append(finish)
        return assoc


class _FastServer(ThreadedAssociationServer):
    """Threaded association server sharing its port (``SO_REUSEPORT``) with the other receiving processes."""

    def get_request(self) -> tuple[socket.socket, Any]:
        sock = cast(socket.socket, self.socket)
        client_socket, address = sock.accept()
        if self.ssl_context:  # qc: handshake later, on the connection's thread (see _FastRequestHandler.handle)
            client_socket = self.ssl_context.wrap_socket(client_socket, server_side=True, do_handshake_on_connect=False)
        return client_socket, address

    request_queue_size = 128
    on_association_finish: Callable[[Association], None] | None = None
    serve_thread: threading.Thread | None = None

    def server_bind(self) -> None:
        sock = cast(socket.socket, self.socket)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def start_server(
    ae: ApplicationEntity,
    address: tuple[str, int],
    *,
    ssl_context: ssl.SSLContext | None,
    evt_handlers: list[Any],
    on_association_finish: Callable[[Association], None] | None = None,
) -> _FastServer:
    """Start a non-blocking association server using the event-driven classes; returns the running server."""
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=evt_handlers,
        server_class=_FastServer,
        request_handler=_FastRequestHandler,
    )
    server = cast(_FastServer, server)
    server.on_association_finish = on_association_finish
    thread = threading.Thread(
        target=make_target(server.serve_forever), name=f"AcceptorServer@{address[1]}", daemon=True
    )
    server.serve_thread = thread
    thread.start()
    ae._servers.append(server)
    return server

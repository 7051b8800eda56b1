"""The pynetdicom overrides: pinned to the pynetdicom source they were written against, and byte-equivalent."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

import pynetdicom
import pytest
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode

from qc_daemon.ingest import fastpath


def resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_pynetdicom_is_the_version_the_overrides_were_written_for() -> None:
    assert pynetdicom.__version__ == fastpath.PINNED_VERSION, (
        "pynetdicom changed: review qc_daemon/ingest/fastpath.py against the new source, then update the pins"
    )


@pytest.mark.parametrize("name", sorted(fastpath.PINNED_SOURCES))
def test_overridden_pynetdicom_sources_unchanged(name: str) -> None:
    source = inspect.getsource(resolve(name))
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == fastpath.PINNED_SOURCES[name], (
        f"{name} changed in pynetdicom: review the matching code in qc_daemon/ingest/fastpath.py, then update the pin"
    )


def command_bytes(message: Any) -> bytes:
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize(
    ("status", "comment"),
    [(0x0000, None), (0xA700, None), (0xC000, "no (0020,000E) SeriesInstanceUID"), (0xC001, "odd")],
)
@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45"])
def test_c_store_response_encoding_matches_pynetdicom(status: int, comment: str | None, instance: str) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 65535
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    rsp.AffectedSOPInstanceUID = instance
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    assert fastpath.encode_c_store_rsp(rsp) == command_bytes(message)


def test_c_store_response_with_offending_element_is_left_to_pynetdicom() -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.AffectedSOPClassUID = "1.2.3"
    rsp.AffectedSOPInstanceUID = "1.2.3.4"
    rsp.Status = 0xA900
    rsp.OffendingElement = [0x00100010]
    assert fastpath.encode_c_store_rsp(rsp) is None


@pytest.mark.parametrize("move", [False, True])
def test_c_store_request_parsing_matches_pynetdicom(move: bool) -> None:
    rq = C_STORE()
    rq.MessageID = 7
    rq.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    rq.AffectedSOPInstanceUID = "1.2.3.4.5"
    rq.Priority = 2
    if move:
        rq.MoveOriginatorApplicationEntityTitle = "MOVER"
        rq.MoveOriginatorMessageID = 3
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    message.command_set.CommandDataSetType = 0x0001
    values = fastpath.parse_c_store_rq(command_bytes(message))
    assert values is not None
    parsed = fastpath._c_store_primitive(values, None, 5)  # type: ignore[arg-type]
    for attr in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority"):
        assert getattr(parsed, attr) == getattr(rq, attr)
    assert parsed.MoveOriginatorApplicationEntityTitle == rq.MoveOriginatorApplicationEntityTitle
    assert parsed.MoveOriginatorMessageID == rq.MoveOriginatorMessageID
    assert parsed._context_id == 5


def test_other_messages_are_left_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(echo)
    assert fastpath.parse_c_store_rq(command_bytes(message)) is None
    assert fastpath.parse_c_store_rq(b"\x00\x00\x00\x00\x04\x00\x00\x00") is None  # truncated
    assert fastpath.parse_c_store_rq(b"") is None


def test_configure_pynetdicom() -> None:
    from pynetdicom import _config

    saved = (_config.UNRESTRICTED_STORAGE_SERVICE, _config.LOG_HANDLER_LEVEL)
    try:
        fastpath.configure_pynetdicom()
        assert _config.UNRESTRICTED_STORAGE_SERVICE is True
        assert _config.LOG_HANDLER_LEVEL == "none"
    finally:
        _config.UNRESTRICTED_STORAGE_SERVICE, _config.LOG_HANDLER_LEVEL = saved

"""Structured logging: one line per event.

Every line carries the time, level, process role and message; lines about a series carry ``series_uid``,
``calling_ae`` and ``scanner`` (use :func:`series_logger`). Other context goes in ``extra={...}`` and becomes JSON
fields. Never put patient names or IDs in a log line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)
_ROLE = "main"


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "role": _ROLE,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the same fields as ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")
        )
        line = f"{stamp} {record.levelname:<7} {_ROLE}[{record.process}] {record.name}: {record.getMessage()}"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "json", role: str | None = None) -> None:
    """Send all logs to stderr in the chosen format; call once per process."""
    global _ROLE
    if role:
        _ROLE = role
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom logs every PDU at INFO/DEBUG; keep its warnings only.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def set_role(role: str) -> None:
    global _ROLE
    _ROLE = role


class SeriesLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose every line names the series, the calling AE and the scanner."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def series_logger(
    logger: logging.Logger,
    *,
    series_uid: str,
    calling_ae: str | None = None,
    scanner: str | None = None,
    **context: Any,
) -> SeriesLogger:
    fields: Mapping[str, Any] = {
        "series_uid": series_uid,
        "calling_ae": calling_ae or "",
        "scanner": scanner or "",
        **context,
    }
    return SeriesLogger(logger, dict(fields))

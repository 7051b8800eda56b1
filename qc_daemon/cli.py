"""The ``qc-daemon`` command line.

Errors are one clear line on stderr and a non-zero exit (2 for a bad configuration or usage, 1 otherwise), never
a traceback; ``--debug`` shows the traceback when one is needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qc_daemon import __version__
from qc_daemon.config import ConfigError, Settings, describe, load_settings, mask_url
from qc_daemon.logs import configure_logging

log = logging.getLogger("qc_daemon.cli")


class CommandError(Exception):
    """An error the user can act on; shown as one line."""


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


# --- commands
def cmd_serve(args: argparse.Namespace) -> int:
    from qc_daemon.supervisor import serve

    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format, role="supervisor")
    return serve(settings)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _out(json.dumps(describe(settings), indent=2))
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from qc_daemon.store.db import make_engine, upgrade

    settings = _settings(args)
    engine = make_engine(settings.resolved_database_url)
    try:
        revision = upgrade(engine)
    finally:
        engine.dispose()
    _out(f"database {mask_url(settings.resolved_database_url)} at revision {revision}")
    return 0


def _open_sessions(settings: Settings) -> Any:
    from qc_daemon.store.db import current_revision, make_engine, make_session_factory

    engine = make_engine(settings.resolved_database_url)
    if current_revision(engine) is None:
        raise CommandError(
            f"database {mask_url(settings.resolved_database_url)} has no schema yet: run `qc-daemon db upgrade` "
            "or start the node"
        )
    return make_session_factory(engine)


def _fmt_scores(series: dict[str, Any]) -> str:
    if series.get("status") == "skipped":
        return f"skipped: {series.get('skip_reason', '')}"
    if series.get("status") == "failed":
        return f"failed: {series.get('error', '')}"
    if series.get("rescan_score") is None:
        return ""
    flags = ",".join(series.get("flags") or []) or "-"
    return f"rescan={series['rescan_score']:.2f} flags={flags}"


def cmd_series_list(args: argparse.Namespace) -> int:
    from qc_daemon.store.views import list_series

    factory = _open_sessions(_settings(args))
    with factory() as session:
        rows = list_series(session, flagged=args.flagged, status=args.status, limit=args.limit)
    if args.json:
        _out(json.dumps(rows, indent=2))
        return 0
    header = f"{'status':<10} {'inst':>5} {'scanner':<28} {'protocol':<28} {'last received':<20} series_uid / result"
    _out(header)
    for s in rows:
        _out(
            f"{s['status']:<10} {s['instance_count']:>5} {(s['scanner'] or '')[:28]:<28} "
            f"{(s['protocol'] or '')[:28]:<28} {(s['last_received_at'] or '')[:19]:<20} {s['series_uid']}"
        )
        detail = _fmt_scores(s)
        if detail:
            _out(f"{'':<10} {detail}")
    return 0


def cmd_series_show(args: argparse.Namespace) -> int:
    from qc_daemon.store.views import get_series

    factory = _open_sessions(_settings(args))
    with factory() as session:
        data = get_series(session, args.uid)
    if data is None:
        raise CommandError(f"no series with UID {args.uid}")
    if args.json:
        _out(json.dumps(data, indent=2))
        return 0
    for key in ("series_uid", "status", "scanner", "protocol", "modality", "instance_count", "calling_ae"):
        _out(f"{key:<16} {data.get(key)}")
    for key in ("skip_reason", "error", "model_name", "model_version", "rescan_score", "flags"):
        if data.get(key) not in (None, [], ""):
            _out(f"{key:<16} {data.get(key)}")
    for artifact, p in (data.get("scores") or {}).items():
        _out(f"  {artifact:<14} {p:.3f}")
    for v in data.get("volumes", []):
        state = v["skip_reason"] if v["status"] == "skipped" else f"rescan={v['rescan_score']:.2f} {v['flags']}"
        _out(f"  volume {v['index']:>3} {v['label'][:40]:<40} {state}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from qc_daemon.ingest.sender import send_paths

    paths = [Path(p) for p in args.paths]
    for p in paths:
        if not p.exists():
            raise CommandError(f"no such file or folder: {p}")
    report = send_paths(
        paths,
        host=args.host,
        port=args.port,
        called_aet=args.aet,
        calling_aet=args.calling_aet,
        progress=not args.quiet,
        associations=args.associations,
    )
    _out(
        f"sent {report.sent} instance(s) ({report.warnings} with a warning status), failed {len(report.failed)}, "
        f"skipped {len(report.skipped)} non-DICOM file(s), in {report.seconds:.1f} s"
    )
    for failure in report.failed[:20]:
        sys.stderr.write(f"failed: {failure}\n")
    if len(report.failed) > 20:
        sys.stderr.write(f"... and {len(report.failed) - 20} more failures\n")
    return 0 if report.ok else 1


def cmd_score(args: argparse.Namespace) -> int:
    from qc_daemon.processing.offline import score_paths
    from qc_daemon.processing.worker import conversion_rules
    from qc_daemon.roles import default_model_path
    from qc_daemon.scoring.model import QCModel

    settings = _settings(args)
    model_path = Path(args.model) if args.model else (settings.model_path or default_model_path())
    if model_path is None or not model_path.is_file():
        raise CommandError(f"model not found: {model_path or 'models/*.onnx'} (use --model)")
    model = QCModel.load(
        model_path,
        providers=settings.ort_providers,
        intra_op_threads=settings.ort_intra_op_threads,
        inter_op_threads=settings.ort_inter_op_threads,
    )
    paths = [Path(p) for p in args.paths]
    for p in paths:
        if not p.exists():
            raise CommandError(f"no such file or folder: {p}")
    overrides = settings.threshold_overrides.get("*", {})
    results = score_paths(paths, model, conversion_rules(settings), overrides, progress=not args.quiet)
    if args.json:
        _out(json.dumps(results, indent=2))
    else:
        for r in results:
            _out(f"{r['status']:<8} {r['path']}  {_fmt_scores(r)}")
    return 0 if all(r["status"] != "failed" for r in results) else 1


# --- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qc-daemon", description="MRI quality-control node.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="TOML configuration file (else QC_CONFIG)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run the node: DICOM listener, workers, HTTP server").set_defaults(func=cmd_serve)
    sub.add_parser("check-config", help="validate the configuration and print it").set_defaults(func=cmd_check_config)

    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply the database migrations").set_defaults(func=cmd_db_upgrade)

    series = sub.add_parser("series", help="received series and their results").add_subparsers(
        dest="series_command", required=True
    )
    listing = series.add_parser("list", help="list series, newest first")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument("--flagged", action="store_true", help="only series with an artifact over threshold")
    listing.add_argument(
        "--status", action="append", choices=["receiving", "complete", "processing", "done", "skipped", "failed"]
    )
    listing.add_argument("--limit", type=int, default=None)
    listing.set_defaults(func=cmd_series_list)
    show = series.add_parser("show", help="one series with its volumes")
    show.add_argument("uid")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_series_show)

    send = sub.add_parser("send", help="send DICOM files or folders with C-STORE (back-filling)")
    send.add_argument("paths", nargs="+")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=11112)
    send.add_argument("--aet", default="QCNODE", help="called AE title")
    send.add_argument("--calling-aet", default="QCSEND")
    send.add_argument("--associations", type=int, default=1)
    send.add_argument("--quiet", action="store_true", help="no progress bar")
    send.set_defaults(func=cmd_send)

    score = sub.add_parser("score", help="score DICOM folders or NIfTI files offline")
    score.add_argument("paths", nargs="+")
    score.add_argument("--json", action="store_true")
    score.add_argument("--model", default=None, help="ONNX model (default: configured or shipped)")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=cmd_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        configure_logging("WARNING", "text", role="cli")
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        sys.stderr.write(f"qc-daemon: {exc}\n")
        return 2
    except CommandError as exc:
        sys.stderr.write(f"qc-daemon: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        sys.stderr.write(f"qc-daemon: {_one_line(exc)}\n")
        return 1


def _one_line(exc: BaseException) -> str:
    """An exception as one line: database errors say which database and why, without SQLAlchemy's boilerplate."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "error"
        return f"database error: {reason}"
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())

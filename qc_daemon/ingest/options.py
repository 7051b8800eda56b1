"""The receiver's settings, as a small picklable object built from :class:`~qc_daemon.config.Settings`."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from qc_daemon.config import Settings


@dataclass(frozen=True)
class ReceiverOptions:
    """Everything one receiving process needs (sent to processes started with ``spawn``)."""

    spool_dir: Path
    quarantine_dir: Path
    run_dir: Path
    ae_title: str = "QCNODE"
    bind_address: str = "0.0.0.0"
    dicom_port: int = 11112
    allowed_calling_aets: tuple[str, ...] = ()
    require_called_aet: bool = False
    max_associations: int = 16
    receiver_processes: int = 1
    max_pdu_size: int = 131072
    network_timeout: float = 60.0
    dimse_timeout: float = 60.0
    acse_timeout: float = 30.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    disk_reserve_mb: int = 1024
    fsync: bool = True
    log_level: str = "INFO"
    log_format: str = "json"
    heartbeat_seconds: float = 2.0
    drain_seconds: float = 10.0  # on stop, how long running associations may finish before they are aborted

    @classmethod
    def from_settings(cls, settings: Settings) -> ReceiverOptions:
        return cls(
            spool_dir=settings.spool_dir,
            quarantine_dir=settings.quarantine_dir,
            run_dir=settings.run_dir,
            ae_title=settings.ae_title,
            bind_address=settings.bind_address,
            dicom_port=settings.dicom_port,
            allowed_calling_aets=tuple(settings.allowed_calling_aets),
            require_called_aet=settings.require_called_aet,
            max_associations=settings.max_associations,
            receiver_processes=settings.effective_receiver_processes,
            max_pdu_size=settings.max_pdu_size,
            network_timeout=settings.network_timeout_seconds,
            dimse_timeout=settings.dimse_timeout_seconds,
            acse_timeout=settings.acse_timeout_seconds,
            tls_cert=settings.tls_cert,
            tls_key=settings.tls_key,
            tls_ca=settings.tls_ca,
            disk_reserve_mb=settings.disk_reserve_mb,
            fsync=settings.fsync,
            log_level=settings.log_level,
            log_format=settings.log_format,
        )

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context (TLS 1.2+), or None without a certificate.

        With ``tls_ca`` set, peers must present a certificate signed by that CA (mutual TLS).
        """
        if not self.tls_enabled:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile=str(self.tls_cert), keyfile=str(self.tls_key))
        if self.tls_ca is not None:
            context.load_verify_locations(cafile=str(self.tls_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

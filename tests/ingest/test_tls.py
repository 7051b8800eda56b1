"""DICOM over TLS: dcmtk echoscu/storescu with ``+tls`` against the receiver (mutual TLS with a test CA)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ingest.receivers import Receivers, spooled
from tests.peers import dcmtk_env, require_tool

pytestmark = pytest.mark.integration


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require_tool("openssl"), *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> Path:
    """A CA, a server and a client certificate signed by it, and a self-signed client it does not know."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=qc-test-ca", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext", cwd=folder)  # fmt: skip
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.crt",
            "-days", "2", "-subj", "/CN=rogue", cwd=folder)  # fmt: skip
    return folder


def tls_tool(tool: str, port: int, certs: Path, client: str, *files: Path) -> subprocess.CompletedProcess[str]:
    cmd = [require_tool(tool), "-aec", "QCNODE", "+tls", str(certs / f"{client}.key"), str(certs / f"{client}.crt")]
    cmd += ["+cf", str(certs / "ca.crt"), "-to", "10", "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, env=dcmtk_env(), capture_output=True, text=True, timeout=60)


def test_tls_with_client_certificates(
    make_receivers: Callable[..., Receivers], tmp_path: Path, shared_data: Path
) -> None:
    certs = make_certificates(tmp_path / "certs")
    receivers = make_receivers(tls_cert=certs / "server.crt", tls_key=certs / "server.key", tls_ca=certs / "ca.crt")
    files = sorted((shared_data / "dicom" / "ge_dwi_2slice_phantom").glob("*.dcm"))[:3]

    assert tls_tool("echoscu", receivers.port, certs, "client").returncode == 0
    stored = tls_tool("storescu", receivers.port, certs, "client", *files)
    assert stored.returncode == 0, stored.stderr
    assert len(spooled(receivers.events(expected=3))) == 3

    rogue = tls_tool("echoscu", receivers.port, certs, "rogue")  # certificate not signed by our CA
    assert rogue.returncode != 0
    plain = subprocess.run(
        [require_tool("echoscu"), "-aec", "QCNODE", "-to", "5", "127.0.0.1", str(receivers.port)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert plain.returncode != 0  # no TLS, no association
    assert tls_tool("echoscu", receivers.port, certs, "client").returncode == 0  # still serving
    receivers.stop()
    assert any(r["msg"] == "receiver listening" and r["tls"] is True for r in receivers.logs())

"""Throwaway TLS material for a lab ZooKeeper: a CA, a server and a client certificate (openssl).

Why openssl and not a Python library: it is on every lab machine, and the files it writes are the
PEM files an operator would make for a real deployment (docs/security.md), so the test exercises
what the docs tell people to do. EC P-256 keys: generating them costs milliseconds, where RSA on a
busy 2-core machine costs seconds. Every private key is written mode 0600 (the project's clients
refuse anything looser).

Both leaf certificates carry ``subjectAltName=IP:127.0.0.1,DNS:localhost``: the server's because
clients check the host name (``verify_certs``), the client's for symmetry (ZooKeeper 3.8.0 does not
check client host names with the settings the lab uses).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from clusterlab.zk_server import ZooKeeperLabError

_LEAF_EXTENSIONS = """\
subjectAltName=IP:127.0.0.1,DNS:localhost
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
DAYS = "2"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one lab CA and the certificates it signed (keys mode 0600)."""

    directory: Path
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    #: server certificate followed by its key: what ZooKeeper's ``ssl.keyStore.type=PEM`` reads
    server_store: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    """Run openssl quietly; a failure becomes one lab error carrying openssl's own message."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ZooKeeperLabError("openssl not found on PATH; install it with: apt-get install openssl")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ZooKeeperLabError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


def _private(path: Path) -> Path:
    os.chmod(path, 0o600)
    return path


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA in ``directory``: (``<name>.pem``, ``<name>.key``)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", *_EC_KEY, "-keyout", key.name, "-out", cert.name, "-days", DAYS,
             "-subj", f"/CN=cipfo-lab-{name}", cwd=directory)
    return cert, _private(key)


def make_leaf(directory: Path, name: str, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    """A certificate ``<name>.pem`` with key ``<name>.key`` signed by the CA (SAN 127.0.0.1)."""
    ext = directory / "leaf.ext"
    ext.write_text(_LEAF_EXTENSIONS)
    csr = directory / f"{name}.csr"
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-new", *_EC_KEY, "-keyout", key.name, "-out", csr.name, "-subj", f"/CN=cipfo-lab-{name}",
             cwd=directory)
    _private(key)
    _openssl("x509", "-req", "-in", csr.name, "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", DAYS, "-extfile", ext.name, "-out", cert.name, cwd=directory)
    csr.unlink()
    return cert, key


def make_tls_files(directory: Path) -> TlsFiles:
    """CA, server and client certificates in ``directory`` (created mode 0700)."""
    ca, ca_key = make_ca(directory)
    server_cert, server_key = make_leaf(directory, "server", ca, ca_key)
    client_cert, client_key = make_leaf(directory, "client", ca, ca_key)
    store = directory / "server-store.pem"
    store.touch(mode=0o600)
    store.write_text(server_cert.read_text() + server_key.read_text())
    return TlsFiles(directory, ca, ca_key, server_cert, server_key, _private(store), client_cert, client_key)

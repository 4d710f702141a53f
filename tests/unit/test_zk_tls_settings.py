"""controller/zk/tls.py without a server: kazoo's TLS arguments, file checks and failure lines.

The handshake itself is proven against a real ZooKeeper in tests/integration/test_zk_tls.py; here
the cheap cases: which arguments kazoo gets (host names checked whenever certificates are), bad
PEM files refused at start in one line, and each handshake failure turned into its fix.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from clusterlab.zk_tls import TlsFiles, make_tls_files

from controller.core.errors import ConfigError
from controller.core.model import ZooKeeperSettings
from controller.zk.client import make_client
from controller.zk.tls import TlsFailureLog, explain, tls_kwargs


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls") / "lab")


@pytest.fixture
def settings(files: TlsFiles) -> ZooKeeperSettings:
    return ZooKeeperSettings(hosts="127.0.0.1:2281", use_ssl=True, ca_file=str(files.ca),
                             cert_file=str(files.client_cert), key_file=str(files.client_key))


def test_no_tls_arguments_without_use_ssl(settings: ZooKeeperSettings) -> None:
    assert tls_kwargs(replace(settings, use_ssl=False)) == {}


def test_host_names_are_checked_whenever_certificates_are(settings: ZooKeeperSettings) -> None:
    assert tls_kwargs(settings) == {
        "use_ssl": True, "verify_certs": True, "check_hostname": True, "ca": settings.ca_file,
        "certfile": settings.cert_file, "keyfile": settings.key_file,
    }
    lab = tls_kwargs(replace(settings, verify_certs=False))
    assert lab["verify_certs"] is False and lab["check_hostname"] is False
    client = make_client(settings)
    assert client.use_ssl and client.verify_certs and client.check_hostname


def test_generated_lab_keys_are_private(files: TlsFiles) -> None:
    for key in (files.ca_key, files.server_key, files.server_store, files.client_key):
        assert key.stat().st_mode & 0o777 == 0o600, key


@pytest.mark.parametrize(
    ("field", "content", "expected"),
    [
        ("ca_file", None, r"^zookeeper\.ca_file /\S+/missing\.pem: No such file or directory; point it at"),
        ("ca_file", "not a certificate\n", r"^zookeeper\.ca_file /\S+: .*; point it at the PEM certificate of the CA"),
        ("cert_file", "not a certificate\n", r"^zookeeper\.cert_file /\S+ with key_file /\S+: .*; give a PEM"),
    ],
)
def test_unloadable_tls_file_is_one_line(
    settings: ZooKeeperSettings, tmp_path: Path, field: str, content: str | None, expected: str
) -> None:
    path = tmp_path / "missing.pem"
    if content is not None:
        path = tmp_path / "bad.pem"
        path.write_text(content)
    with pytest.raises(ConfigError, match=expected) as refused:
        tls_kwargs(replace(settings, **{field: str(path)}))
    assert "\n" not in str(refused.value)


def test_key_of_another_certificate_is_refused(settings: ZooKeeperSettings, files: TlsFiles) -> None:
    with pytest.raises(ConfigError, match=r"zookeeper\.cert_file .*KEY_VALUES_MISMATCH"):
        tls_kwargs(replace(settings, key_file=str(files.server_key)))


def test_loose_key_is_refused_before_anything_is_loaded(settings: ZooKeeperSettings, tmp_path: Path) -> None:
    loose = tmp_path / "client.key"
    loose.write_bytes(Path(settings.key_file).read_bytes())
    loose.chmod(0o640)
    with pytest.raises(ConfigError) as refused:
        tls_kwargs(replace(settings, key_file=str(loose)))
    assert str(refused.value) == f"zookeeper.key_file {loose} is readable by group/others; chmod 600 it"


@pytest.mark.parametrize(
    ("failure", "reason", "fix"),
    [
        ("socket connection error: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get "
         "local issuer certificate (_ssl.c:1006)",
         "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate",
         "zookeeper.ca_file is the CA"),
        ("socket connection error: [SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:1006)",
         "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate", "refused this client's certificate"),
        ("socket connection error: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required "
         "(_ssl.c:2580)", "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required",
         "refused this client's certificate"),
        ("socket connection error: [SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol "
         "(_ssl.c:1006)", "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol",
         "secureClientPort, not clientPort"),
    ],
)
def test_handshake_failures_name_their_fix(failure: str, reason: str, fix: str) -> None:
    line = explain("zk1:2281", failure)
    assert line.startswith(f"TLS handshake with ZooKeeper at zk1:2281 failed ({reason}); "), line
    assert fix in line and "_ssl.c" not in line and "\n" not in line


def test_failure_log_remembers_handshake_errors_even_when_kazoo_is_quiet() -> None:
    logger = logging.getLogger("test_zk_tls_settings.kazoo")
    logger.setLevel(logging.CRITICAL)
    log = TlsFailureLog(logger)
    log.warning("Connection dropped: %s", "socket connection error: Connection refused")
    assert log.last_failure == ""
    log.warning("Connection dropped: %s", "socket connection error: [SSL: X] y (_ssl.c:1)")
    log.info("Connecting to %s", "zk1")
    assert log.last_failure == "socket connection error: [SSL: X] y (_ssl.c:1)"

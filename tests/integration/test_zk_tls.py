"""TLS to ZooKeeper against a real server (Debian's 3.8.0, Netty, PEM stores, client certs required).

One lab server with a throwaway CA (clusterlab.zk_tls). Every client here names only the server's
``secureClientPort``, and the first test checks the kazoo socket really is TLS to that port, so a
passing run cannot come from the plain port the lab keeps for its readiness check. Failures (wrong
CA, no client certificate, plain port, loose key file) must come back as one line, within the
connect timeout.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from clusterlab.zk_tls import make_ca
from clusterlab.zookeeper import ZooKeeperCluster
from conftest import running_zookeeper, unique_chroot
from ctl_fixtures import HOSTS, run, spec_of, write_config

from controller.core.errors import ConfigError, CoordinationError
from controller.core.model import Config, Health, ZooKeeperSettings
from controller.health_source import ManualHealth
from controller.service import ControllerService
from controller.zk.client import make_client, start_client
from controller.zk.store import ClusterStore
from node_hook.agent import HookAgent
from node_hook.backends.memory import MemoryBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
CONNECT_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def tls_zk() -> Iterator[ZooKeeperCluster]:
    with running_zookeeper(tls=True) as cluster:
        yield cluster


@pytest.fixture
def settings(tls_zk: ZooKeeperCluster, request: pytest.FixtureRequest) -> ZooKeeperSettings:
    """TLS settings for the secure port only, with the lab CA and client certificate."""
    tls = tls_zk.tls
    assert tls is not None
    return ZooKeeperSettings(
        hosts=tls_zk.secure_hosts, chroot=unique_chroot(request.node.name), session_timeout_s=2.0,
        connect_timeout_s=CONNECT_TIMEOUT_S, use_ssl=True, ca_file=str(tls.ca), cert_file=str(tls.client_cert),
        key_file=str(tls.client_key),
    )


def _tls_config(tmp_path: Path, settings: ZooKeeperSettings) -> Path:
    """The seed config pointed at the TLS port, with the given TLS files."""
    path = write_config(tmp_path, settings.hosts, settings.chroot)
    doc = yaml.safe_load(path.read_text())
    doc["zookeeper"].update(use_ssl=True, ca_file=settings.ca_file, cert_file=settings.cert_file,
                            key_file=settings.key_file, connect_timeout_s=settings.connect_timeout_s)
    path.write_text(yaml.safe_dump(doc))
    return path


def _refused(settings: ZooKeeperSettings) -> tuple[str, float]:
    """start_client's one-line CoordinationError and how long it took."""
    client = make_client(settings)
    began = time.monotonic()
    with pytest.raises(CoordinationError) as refused:
        start_client(client, settings)
    message = str(refused.value)
    assert "\n" not in message, message
    return message, time.monotonic() - began


def test_client_certificate_session_on_the_secure_port(tls_zk: ZooKeeperCluster, settings: ZooKeeperSettings) -> None:
    client = make_client(settings)
    start_client(client, settings)  # the chroot is created by a bootstrap client, over TLS too
    try:
        sock = client._connection._socket
        assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.getpeername()[1] == tls_zk.servers[0].secure_port != tls_zk.servers[0].client_port
        client.create("/over-tls", b"sealed")
        client.set("/over-tls", b"sealed twice")
        assert client.get("/over-tls")[0] == b"sealed twice"
    finally:
        client.stop()
        client.close()
    plain = tls_zk.connect()  # the lab's plain port: the same server, so the same znode
    try:
        assert plain.get(f"{settings.chroot}/over-tls")[0] == b"sealed twice"
    finally:
        plain.stop()
        plain.close()


def test_controller_hooks_and_ctl_run_over_tls(
    tls_zk: ZooKeeperCluster, settings: ZooKeeperSettings, tmp_path: Path
) -> None:
    config_file = _tls_config(tmp_path, settings)
    spec = spec_of(config_file)
    config = Config(zookeeper=settings, clusters=(spec,))
    service = ControllerService(config, {spec.name: ManualHealth(HOSTS, Health.UP)}, controller_id="tls-ctl",
                                cycle_interval_s=0.2)
    hooks = [HookAgent(spec, settings, h, MemoryBackend(spec.buckets), address=f"127.0.0.{71 + i}",
                       peer_bind=f"127.0.0.{71 + i}") for i, h in enumerate(HOSTS)]
    client = make_client(settings)
    start_client(client, settings)
    store = ClusterStore(client, spec)
    try:
        for hook in hooks:
            hook.start()
        service.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = store.snapshot()
            if snap.map.epoch > 0 and set(snap.members) == set(HOSTS) and all(
                snap.map.owner_of(b) == spec.home_of(b) for b in range(1, spec.buckets + 1)
            ) and set(snap.statuses) == set(HOSTS):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"cluster did not converge over TLS: {store.snapshot()}")
        result = run(config_file, "status")
    finally:
        service.stop()
        for hook in hooks:
            hook.stop(release=False)
        client.stop()
        client.close()
    assert result.exit_code == 0, result.output
    assert all(host in result.stdout for host in HOSTS), result.stdout


def test_wrong_ca_fails_in_one_line_within_the_connect_timeout(
    settings: ZooKeeperSettings, tmp_path: Path
) -> None:
    other_ca, _ = make_ca(tmp_path / "other", "other-ca")
    wrong = replace(settings, ca_file=str(other_ca))
    message, took = _refused(wrong)
    assert "certificate verify failed" in message and "zookeeper.ca_file" in message, message
    assert took < CONNECT_TIMEOUT_S + 2, took
    result = run(_tls_config(tmp_path, wrong), "status")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clusterip-ctl: error: TLS handshake with ZooKeeper"), lines


def test_client_without_certificate_is_refused(settings: ZooKeeperSettings) -> None:
    message, took = _refused(replace(settings, cert_file="", key_file=""))
    assert "refused this client's certificate" in message and "zookeeper.cert_file" in message, message
    assert took < CONNECT_TIMEOUT_S + 2, took


def test_tls_client_on_the_plain_port_and_plain_client_on_the_tls_port_fail(
    tls_zk: ZooKeeperCluster, settings: ZooKeeperSettings
) -> None:
    plain_port = f"127.0.0.1:{tls_zk.servers[0].client_port}"
    message, _ = _refused(replace(settings, hosts=plain_port))
    assert "TLS handshake" in message and "secureClientPort" in message, message
    message, _ = _refused(replace(settings, use_ssl=False, ca_file="", cert_file="", key_file=""))
    assert message.startswith("cannot reach ZooKeeper"), message


def test_loose_key_file_is_refused_at_start(settings: ZooKeeperSettings, tmp_path: Path) -> None:
    loose = tmp_path / "client.key"
    loose.write_bytes(Path(settings.key_file).read_bytes())
    loose.chmod(0o644)
    expected = f"zookeeper.key_file {loose} is readable by group/others; chmod 600 it"
    with pytest.raises(ConfigError) as refused:
        make_client(replace(settings, key_file=str(loose)))
    assert str(refused.value) == expected
    config = _tls_config(tmp_path, replace(settings, key_file=str(loose)))
    result = run(config, "status")
    assert result.exit_code == 2 and result.stderr.strip().endswith(expected), result.output
    proc = subprocess.run(
        [sys.executable, "-m", "node_hook.main", "--config", str(config), "--host", "unix1", "--backend", "memory",
         "--no-metrics"], capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"clusterip-node-hook: error: {expected}"]

"""ZooKeeper access control with real digest ACLs (docs/security.md).

A tree made by ``clusterip-ctl acl init``; then each role's client is tried against the znodes it
must and must not change. Denials come back as one-line CoordinationErrors. A full run (controller
and hooks in process, one hook as a subprocess at DEBUG) proves the secrets stay out of znodes, logs
and process arguments.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml
from clusterlab.zookeeper import ZooKeeperCluster
from conftest import unique_chroot
from ctl_fixtures import CLUSTER, HOSTS, run, spec_of, write_config
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from controller.core import zk_layout as layout
from controller.core.errors import ConfigError, CoordinationError
from controller.core.model import (
    BucketMap,
    BucketState,
    ClusterSpec,
    Config,
    Health,
    HookStatus,
    Intents,
    ZooKeeperSettings,
)
from controller.health_source import ManualHealth
from controller.service import ControllerService
from controller.zk.client import make_client, start_client
from controller.zk.store import ClusterStore
from node_hook.agent import HookAgent
from node_hook.backends.memory import MemoryBackend

ROOT = Path(__file__).resolve().parents[2]
USERS = ("controller", "operator", "reader", *(f"hook-{h}" for h in HOSTS))


@dataclass
class Secured:
    """A tree made by `acl init`, the credential files of every role and the settings to use them."""

    zk: ZooKeeperSettings
    spec: ClusterSpec
    creds: Path
    passwords: dict[str, str]
    config_file: Path

    def as_role(self, user: str) -> ZooKeeperSettings:
        return replace(self.zk, auth_file=str(self.creds / f"{user}.secret"))

    def client(self, user: str | None) -> KazooClient:
        settings = self.as_role(user) if user else replace(self.zk, auth_file="")
        client = make_client(settings)
        if user:
            start_client(client, settings)
        else:
            client.start(timeout=10)
        return client

    def store(self, user: str) -> ClusterStore:
        return ClusterStore(self.client(user), self.spec)


@pytest.fixture
def secured(zk_server: ZooKeeperCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Secured]:
    chroot = unique_chroot(request.node.name)
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    passwords = {}
    for user in USERS:
        passwords[user] = secrets.token_urlsafe(18)
        path = creds / f"{user}.secret"
        path.touch(mode=0o600)
        path.write_text(f"{user}:{passwords[user]}\n")
    config_file = write_config(tmp_path, zk_server.hosts, chroot)
    doc = yaml.safe_load(config_file.read_text())
    doc["zookeeper"]["auth_file"] = str(creds / "operator.secret")
    config_file.write_text(yaml.safe_dump(doc))
    result = run(config_file, "acl", "init", "--credentials-dir", str(creds))
    assert result.exit_code == 0, result.output
    zk = ZooKeeperSettings(hosts=zk_server.hosts, chroot=chroot, session_timeout_s=2.0, connect_timeout_s=10.0)
    yield Secured(zk, spec_of(config_file), creds, passwords, config_file)


def _one_line_denial(exc: pytest.ExceptionInfo[CoordinationError]) -> None:
    message = str(exc.value)
    assert "\n" not in message and "denied access" in message and "acl init" in message, message


def _a_map(spec: ClusterSpec, epoch: int = 1) -> BucketMap:
    return BucketMap(spec.name, epoch, {b: BucketState(owner=spec.home_of(b)) for b in range(1, spec.buckets + 1)})


def test_hook_cannot_change_the_map_or_another_hosts_znodes(secured: Secured) -> None:
    controller = secured.store("controller")
    hook1 = secured.store("hook-unix1")
    hook2 = secured.store("hook-unix2")
    try:
        # Before any map exists a hook cannot create one (no CREATE on the cluster root) ...
        with pytest.raises(CoordinationError) as denied:
            hook1.write_map(_a_map(secured.spec), -1, None)
        _one_line_denial(denied)
        assert controller.write_map(_a_map(secured.spec), -1, None)
        _, version = controller.read_map()
        # ... nor change it once the controller wrote it; but it can read it.
        with pytest.raises(CoordinationError) as denied:
            hook1.write_map(_a_map(secured.spec, 2), version, None)
        _one_line_denial(denied)
        assert hook1.read_map()[0].epoch == 1
        # Its own status: yes. Another host's status: no.
        hook1.publish_status(HookStatus("unix1", 1, frozenset({1}), time.time()))
        with pytest.raises(CoordinationError) as denied:
            hook1.publish_status(HookStatus("unix2", 1, frozenset(), time.time()))
        _one_line_denial(denied)
        # Another host's member znode: cannot change or delete it once that host registered.
        member2 = layout.member_path(CLUSTER, "unix2")
        hook2.client.create(member2, b"{}", ephemeral=True)
        with pytest.raises(NoAuthError):
            hook1.client.set(member2, b"rogue")
        with pytest.raises(NoAuthError):
            hook1.client.delete(member2)
        # Health and history are the controller's.
        with pytest.raises(CoordinationError) as denied:
            hook1.write_health({})
        _one_line_denial(denied)
        with pytest.raises(NoAuthError):
            hook1.client.create(layout.history_event_prefix(CLUSTER), b"{}", sequence=True)
        controller.write_health({})
        controller.append_history([])
        snapshot = controller.snapshot()
        assert snapshot.statuses["unix1"].held == frozenset({1})
        assert "unix2" not in snapshot.statuses  # made empty by acl init: not a status yet
    finally:
        for store in (controller, hook1, hook2):
            store.client.stop()
            store.client.close()


def test_operator_writes_intents_not_the_map(secured: Secured) -> None:
    controller = secured.store("controller")
    operator = secured.store("operator")
    reader = secured.store("reader")
    anonymous = secured.client(None)
    try:
        _, version = operator.read_intents()
        assert version == 0  # made by acl init, so operators need no CREATE on the cluster root
        assert operator.write_intents(Intents(drained=frozenset({"unix2"})), version)
        assert controller.read_intents()[0].drained == frozenset({"unix2"})
        with pytest.raises(CoordinationError) as denied:
            operator.write_map(_a_map(secured.spec), -1, None)
        _one_line_denial(denied)
        assert controller.write_map(_a_map(secured.spec), -1, None)
        with pytest.raises(CoordinationError) as denied:
            operator.write_map(_a_map(secured.spec, 2), 0, None)
        _one_line_denial(denied)
        # The read-only role reads everything and writes nothing; without credentials nothing at all.
        assert reader.read_map()[0].epoch == 1
        with pytest.raises(CoordinationError) as denied:
            reader.write_intents(Intents(paused=True), 1)
        _one_line_denial(denied)
        with pytest.raises(NoAuthError):
            anonymous.get(layout.map_path(CLUSTER))
        # A mutating clusterip-ctl command with the reader's credentials is refused in one line.
        doc = yaml.safe_load(secured.config_file.read_text())
        doc["zookeeper"]["auth_file"] = str(secured.creds / "reader.secret")
        reader_config = secured.config_file.with_name("reader.yaml")
        reader_config.write_text(yaml.safe_dump(doc))
        result = run(reader_config, "pause", "--yes")
        assert result.exit_code == 1, result.output
        assert "denied access" in result.output
    finally:
        for client in (controller.client, operator.client, reader.client, anonymous):
            client.stop()
            client.close()


def test_loose_secret_file_is_refused_with_one_line(secured: Secured, tmp_path: Path) -> None:
    loose = tmp_path / "loose.secret"
    loose.write_text("hook-unix1:whatever\n")
    loose.chmod(0o640)
    with pytest.raises(ConfigError) as refused:
        make_client(replace(secured.zk, auth_file=str(loose)))
    assert str(refused.value) == f"zookeeper.auth_file {loose} is readable by group/others; chmod 600 it"
    key = tmp_path / "client.key"
    key.write_text("not really a key")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"zookeeper\.key_file .* chmod 600 it"):
        make_client(replace(secured.zk, use_ssl=True, cert_file=str(key), key_file=str(key)))
    # The hook's command line refuses to start (exit 2) with the same single line.
    doc = yaml.safe_load(secured.config_file.read_text())
    doc["zookeeper"]["auth_file"] = str(loose)
    config = tmp_path / "loose.yaml"
    config.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "node_hook.main", "--config", str(config), "--host", "unix1", "--backend", "memory",
         "--no-metrics"], capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"clusterip-node-hook: error: zookeeper.auth_file {loose} is readable by group/others; chmod 600 it"
    ]


def test_secrets_stay_out_of_znodes_logs_and_arguments(
    secured: Secured, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("kazoo").setLevel(logging.DEBUG)
    spec = secured.spec
    config = Config(zookeeper=secured.as_role("controller"), clusters=(spec,))
    service = ControllerService(config, {spec.name: ManualHealth(HOSTS, Health.UP)}, controller_id="acl-ctl",
                                cycle_interval_s=0.2)
    hooks = [HookAgent(spec, secured.as_role(f"hook-{h}"), h, MemoryBackend(spec.buckets),
                       address=f"127.0.0.{61 + i}", peer_bind=f"127.0.0.{61 + i}")
             for i, h in enumerate(HOSTS[:3])]
    doc = yaml.safe_load(secured.config_file.read_text())
    doc["zookeeper"]["auth_file"] = str(secured.creds / "hook-unix4.secret")
    doc["clusters"][0]["handoff"]["peer_port"] = 0
    hook_config = tmp_path / "hook-unix4.yaml"
    hook_config.write_text(yaml.safe_dump(doc))
    log_file = tmp_path / "hook-unix4.log"
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node_hook.main", "--config", str(hook_config), "--host", "unix4",
             "--backend", "memory", "--address", "127.0.0.64", "--peer-bind", "127.0.0.64", "--no-metrics",
             "--log-level", "DEBUG"], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )
    reader = secured.store("reader")
    try:
        for hook in hooks:
            hook.start()
        service.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = reader.snapshot()
            if snap.map.epoch > 0 and set(snap.members) == set(HOSTS) and all(
                snap.map.owner_of(b) == spec.home_of(b) for b in range(1, spec.buckets + 1)
            ):
                break
            assert proc.poll() is None, log_file.read_text()
            time.sleep(0.2)
        else:
            pytest.fail(f"cluster did not converge with ACLs: {reader.snapshot()}\n{log_file.read_text()}")
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
        znodes = _all_znode_bytes(reader.client, "/")
    finally:
        service.stop()
        for hook in hooks:
            hook.stop(release=False)
        proc.terminate()
        proc.wait(timeout=30)
        reader.client.stop()
        reader.client.close()
    hook_log = log_file.read_text()
    assert "hook unix4 of cluster unix0 started" in hook_log, hook_log
    # In process, kazoo's own DEBUG line of the Auth request was logged, with the credential redacted.
    assert "Auth(" in caplog.text and "<redacted>" in caplog.text
    for user, password in secured.passwords.items():
        for where, text in (("znodes", znodes), ("hook log", hook_log), ("in-process logs", caplog.text),
                            ("hook arguments", argv), ("hook environment", environ)):
            assert password not in text, f"the password of {user} appears in the {where}"


def _all_znode_bytes(client: KazooClient, path: str) -> str:
    """Data and ACLs of every znode under ``path`` that the client may read, as one text."""
    parts = []
    try:
        data, _ = client.get(path)
        acls, _ = client.get_acls(path)
        parts += [data.decode(errors="replace"), repr(acls)]
        for child in client.get_children(path):
            parts.append(_all_znode_bytes(client, f"{path.rstrip('/')}/{child}"))
    except NoAuthError:
        pass
    return "\n".join(parts)


def test_owner_only_secret_file_mode_is_what_acl_init_needs(tmp_path: Path, secured: Secured) -> None:
    """`acl init` refuses a group-readable role credential too: every secret goes through one check."""
    (secured.creds / "reader.secret").chmod(0o644)
    result = run(secured.config_file, "acl", "init", "--credentials-dir", str(secured.creds))
    assert result.exit_code == 2, result.output
    assert "reader.secret is readable by group/others; chmod 600 it" in result.output
    os.chmod(secured.creds / "reader.secret", 0o600)
    assert run(secured.config_file, "acl", "init", "--credentials-dir", str(secured.creds)).exit_code == 0

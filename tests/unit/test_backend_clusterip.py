"""CLUSTERIP backend without a CLUSTERIP kernel: /proc errno mapping, idempotence, prerequisites."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
from pathlib import Path

import pytest

from controller.core.errors import BackendError
from controller.core.model import ClusterSpec, HashSettings, HostSpec
from node_hook.backends import _prereq
from node_hook.backends._clusterip_proc import Op, ProcFile, outcome, parse
from node_hook.backends.clusterip import ClusterIPBackend

SEED = ClusterSpec(
    name="unix0", vip=ipaddress.ip_address("129.65.158.160"), interface="eth0", backend="clusterip", buckets=4,
    cluster_mac="01:00:5E:41:9E:A0", hosts=(HostSpec("unix4", (4,), "unix4"),),
    hash=HashSettings(mode="sourceip", hash_init=0), ports=(22,), protocol="tcp",
)


class FakeProc(ProcFile):
    """A control file that answers writes like the 6.1 kernel (per notes/clusterip-qemu.md)."""

    def __init__(self, owned: set[int], total: int = 4, fail: int | None = None) -> None:
        super().__init__(Path("/nonexistent"))
        self.owned, self.total, self.fail, self.writes = owned, total, fail, 0

    def read(self) -> frozenset[int]:
        return frozenset(self.owned)

    def write(self, op: Op, bucket: int) -> int | None:
        self.writes += 1
        if self.fail is not None:
            return self.fail
        if op == "+":
            if bucket in self.owned or not 1 <= bucket <= self.total:
                return errno.ENOMEM
            self.owned.add(bucket)
        else:
            if bucket not in self.owned:
                return errno.ENOENT
            self.owned.discard(bucket)
        return None


def test_parse_control_file() -> None:
    assert parse("") == frozenset()
    assert parse("2\n") == {2}
    assert parse("1,3,4\n") == {1, 3, 4}
    with pytest.raises(BackendError, match="unexpected"):
        parse("garbage")


def test_errno_meanings() -> None:
    assert outcome("+", None) == "done"
    assert outcome("+", errno.ENOMEM) == "verify"
    assert outcome("-", errno.ENOENT) == "verify"
    assert "deleted" in outcome("+", errno.EIO)
    assert "malformed" in outcome("-", errno.EINVAL)
    assert "root" in outcome("+", errno.EACCES)
    assert outcome("-", errno.ENOMEM) != "verify"  # ENOMEM on a revoke is not "already done"


def test_grant_and_revoke_are_idempotent_one_write_each() -> None:
    proc = FakeProc({2})
    proc.change("+", 3)
    proc.change("+", 3)  # ENOMEM, owned: already done
    proc.change("-", 1)  # ENOENT, not owned: already done
    proc.change("-", 2)
    assert proc.owned == {3} and proc.writes == 4


def test_errors_are_clear_backend_errors() -> None:
    with pytest.raises(BackendError, match="deleted under us"):
        FakeProc({1}, fail=errno.EIO).change("+", 2)
    # ENOMEM although the bucket is not owned: the kernel's total differs from the config
    with pytest.raises(BackendError, match="total-nodes differs"):
        FakeProc(set(), total=2).change("+", 3)


def test_real_file_io(tmp_path: Path) -> None:
    path = tmp_path / "129.65.158.160"
    path.write_text("1,2\n")
    proc = ProcFile(path)
    assert proc.read() == {1, 2}
    path.write_text("")
    assert proc.write("+", 3) is None
    assert path.read_text() == "+3"  # exactly one write of "+N", no newline, no buffering
    with pytest.raises(BackendError, match="does not exist"):
        ProcFile(tmp_path / "missing").change("+", 1)


def test_backend_uses_the_vip_file_and_checks_range(tmp_path: Path) -> None:
    (tmp_path / "129.65.158.160").write_text("4\n")
    backend = ClusterIPBackend(SEED, "unix4", proc_dir=tmp_path)
    assert backend.held() == {4}
    with pytest.raises(BackendError, match=r"outside 1\.\.4"):
        backend.grant(5)


def test_seed_rule_is_built_by_libxtables() -> None:
    rule = ClusterIPBackend(SEED, "unix4").clusterip_rule(4)
    assert rule.target.name == "CLUSTERIP"
    assert rule.target.parameters == {"new": "", "hashmode": "sourceip", "clustermac": "01:00:5E:41:9E:A0",
                                      "total_nodes": "4", "local_node": "4", "hash_init": "0"}
    assert rule.dst.startswith("129.65.158.160/") and rule.in_interface == "eth0" and rule.protocol == "tcp"


def test_prerequisites_name_kernel_and_iptables_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_prereq, "kernel_release", lambda: (6, 18))
    monkeypatch.setattr(_prereq, "iptables_is_nft", lambda: True)
    problems = ClusterIPBackend(SEED, "unix4").check_prerequisites()
    assert any("kernel 6.18 has no CLUSTERIP (removed in Linux 6.3)" in p for p in problems)
    assert any("iptables-nft" in p and "update-alternatives" in p for p in problems)
    v6 = ClusterIPBackend(dataclasses.replace(SEED, vip=ipaddress.ip_address("2001:2::1")), "unix4")
    assert any("IPv4 only" in p for p in v6.check_prerequisites())
    many = ClusterIPBackend(dataclasses.replace(SEED, buckets=17), "unix4")
    assert any("at most 16" in p for p in many.check_prerequisites())
    assert all("\n" not in p for p in problems)

"""The xt_cluster drain rules (docs/drain.md), built and read back without a kernel.

Rules are built through python-iptables/libxtables (userspace only) and serialised to the bytes the
kernel would hold; a fake table hands those bytes to the backend's reader, so the layout check and
the per-role nodemask decoding are exercised exactly as on the apply path.
"""

from __future__ import annotations

import ctypes
import dataclasses
import ipaddress
import struct
from typing import Any

import pytest

from controller.core.errors import BackendError
from controller.core.model import ClusterSpec, HashSettings, HostSpec
from node_hook.backends._xtables import MATCH_HEADER, rule_comment
from node_hook.backends.xt_cluster import (
    BALANCE,
    DRAIN,
    QUIET,
    ROLES,
    XtClusterBackend,
    comment_text,
    mask_fields,
    role_targets,
)

SPEC = ClusterSpec(
    name="unix0", vip=ipaddress.ip_address("198.18.0.100"), interface="eth0", backend="xt_cluster", buckets=4,
    cluster_mac="01:00:5E:41:9E:A0", hosts=(HostSpec("h1", (1,), "198.18.0.11"),),
    hash=HashSettings(seed=0xDEADBEEF), ports=(22,), protocol="tcp",
)


def backend(**changes: Any) -> XtClusterBackend:
    return XtClusterBackend(dataclasses.replace(SPEC, **changes), "h1")


def params(rule: Any) -> dict[str, dict[str, str]]:
    return {m.name: dict(m.parameters) for m in rule.matches}


class FakeTable:
    """What libiptc's first_rule/next_rule hand out: raw ipt_entry structs, here from built rules."""

    def __init__(self, rules: list[Any]) -> None:
        import iptc.ip4tc as ip4tc

        self._bufs = [r.rule for r in rules]  # keep the bytes alive
        self.entries = [ctypes.cast(b, ctypes.POINTER(ip4tc.ipt_entry)).contents for b in self._bufs]

    def is_chain(self, _chain: str) -> bool:
        return True

    def first_rule(self, _chain: str) -> Any:
        return self.entries[0] if self.entries else None

    def next_rule(self, entry: Any) -> Any:
        at = [ctypes.addressof(e) for e in self.entries].index(ctypes.addressof(entry))
        return self.entries[at + 1] if at + 1 < len(self.entries) else None


def test_role_targets_drain_only_what_is_not_owned_and_hush_only_what_is() -> None:
    targets = role_targets(frozenset({1, 2}), frozenset({2, 3}), frozenset({1, 4}))
    assert targets == {QUIET: frozenset({1}), BALANCE: frozenset({1, 2}), DRAIN: frozenset({3})}


def test_chain_layout_quiet_balance_drain_then_the_guards() -> None:
    b = backend()
    assert [c.rsplit(":", 1)[-1] for c in b.expected_comments()] == [
        "quiet", "balance", "drain", "icmp0", "icmp1", "icmp2", "drop"]
    assert all(c.startswith(f"cif:{b.fp}:") for c in b.expected_comments())


def test_quiet_rule_drops_mid_stream_tcp_conntrack_has_just_opened() -> None:
    rule = backend().quiet_rule(frozenset({2}))
    p = params(rule)
    assert rule.protocol == "tcp" and rule.target.name == "DROP"
    assert p["tcp"] == {"dport": "22", "tcp_flags": "!FIN,SYN,RST,ACK SYN"}  # not a SYN
    assert p["conntrack"] == {"ctstate": "NEW"}  # ... yet new to this host's conntrack
    assert p["cluster"]["cluster_local_nodemask"] == "0x00000002"
    assert p["cluster"]["cluster_hash_seed"] == "0xdeadbeef"
    # the cluster match comes last: it is only asked once the cheaper matches said yes
    assert [m.name for m in rule.matches][-1] == "cluster"


def test_quiet_rule_for_several_ports_and_for_other_protocols() -> None:
    p = params(backend(ports=(22, 2222)).quiet_rule(frozenset({1})))
    assert p["multiport"] == {"dports": "22,2222"} and p["tcp"] == {"tcp_flags": "!FIN,SYN,RST,ACK SYN"}
    for protocol, ports in (("all", ()), ("udp", (53,))):
        rule = backend(protocol=protocol, ports=ports).quiet_rule(frozenset({1}))
        assert rule.protocol == "tcp" and "multiport" not in params(rule)
        assert params(rule)["tcp"] == {"tcp_flags": "!FIN,SYN,RST,ACK SYN"}


def test_drain_rule_keeps_only_tracked_tcp_connections_of_the_service() -> None:
    rule = backend().drain_rule(frozenset({3}))
    p = params(rule)
    assert rule.protocol == "tcp" and rule.target.name == "RETURN"
    assert p["tcp"] == {"dport": "22"}
    assert p["conntrack"]["ctstate"] == "RELATED,ESTABLISHED" and p["conntrack"]["ctproto"] == "6"
    assert p["cluster"]["cluster_local_nodemask"] == "0x00000004"
    # a UDP service: same matches as its balance rule, and --ctproto tcp makes the rule inert (UDP
    # flows are not drained: the new owner could not tell them from new ones)
    udp = backend(protocol="udp", ports=(53,)).drain_rule(frozenset({3}))
    assert udp.protocol == "udp" and params(udp)["conntrack"]["ctproto"] == "6"


def test_empty_roles_are_the_inverted_full_mask() -> None:
    b = backend()
    for role in ROLES:
        assert params(b._build(role, frozenset()))["cluster"]["cluster_local_nodemask"] == "!0x0000000f"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_patches_its_own_template(role: str) -> None:
    b = backend(buckets=12)
    others = {r: b._patched(frozenset({1}), r) for r in ROLES if r != role}
    rule = b._patched(frozenset({5, 12}), role)
    assert rule_comment(rule).endswith(f":{role}")
    match = next(m for m in rule.matches if m.name == "cluster")
    _total, mask, _seed, flags = struct.unpack_from("<IIII", match._match_buf, MATCH_HEADER)
    assert (mask, flags) == mask_fields(frozenset({5, 12}), 12)
    for other in others.values():  # untouched by this patch
        m = next(x for x in other.matches if x.name == "cluster")
        assert struct.unpack_from("<IIII", m._match_buf, MATCH_HEADER)[1] == 1


def test_roles_are_read_back_from_the_kernel_entries() -> None:
    b = backend(buckets=12)
    chain = b._chain_rules()
    want = {QUIET: frozenset({2}), BALANCE: frozenset({2, 7, 12}), DRAIN: frozenset()}
    for index, role in enumerate(ROLES):
        chain[index] = b._patched(want[role], role)
        b._templates.pop(role)  # the chain keeps this patched copy; the next patch builds another
    assert b._read_roles(FakeTable(chain)) == want


def test_a_chain_of_the_older_layout_is_adopted_by_comment_but_not_applied_to() -> None:
    """Before draining the chain began with the balance rule; install keeps its buckets, while the
    apply path (which replaces the first three rules by position) refuses it."""
    b = backend()
    old = [b._patched(frozenset({1, 3})), *b._chain_rules()[3:]]
    assert b._read_roles(FakeTable(old), strict=False) == {BALANCE: frozenset({1, 3})}
    with pytest.raises(BackendError, match="not our quiet, balance and drain rules"):
        b._read_roles(FakeTable(old))


def test_comment_text_stops_at_the_nul() -> None:
    assert comment_text(b"cif:abc:drain\0\0garbage") == "cif:abc:drain"


def test_conntrack_pickup_off_is_said_once_and_never_written(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """xt_cluster needs nf_conntrack_tcp_loose=1 only for the crash-takeover reset: it reads it, says
    once when it is 0, and never writes it (an nftables cluster in the namespace needs 0)."""
    from node_hook import conntrack

    value = {"loose": 0}
    monkeypatch.setattr(conntrack, "tcp_loose", lambda: value["loose"])
    monkeypatch.setattr(conntrack, "ensure_tcp_loose_off", lambda: pytest.fail("must not write the switch"))
    b = backend()
    with caplog.at_level("WARNING", logger="clusterip.hook"):
        b._check_pickup()
        b._check_pickup()
        assert len(caplog.records) == 1 and "cannot reset" in caplog.records[0].getMessage()
        value["loose"] = 1
        b._check_pickup()
        value["loose"] = 0
        b._check_pickup()  # set back to 0 later: said again
    assert len(caplog.records) == 2


def test_grant_and_revoke_leave_the_other_roles_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    b = backend()
    calls: list[tuple[Any, Any, Any]] = []
    monkeypatch.setattr(b, "roles", lambda: {QUIET: frozenset({1}), BALANCE: frozenset({1}), DRAIN: frozenset({3})})

    def apply_drain(wanted: Any, draining: Any = (), quiet: Any = ()) -> tuple[frozenset[int], frozenset[int]]:
        calls.append((wanted, draining, quiet))
        return frozenset(wanted), frozenset(draining)

    monkeypatch.setattr(b, "apply_drain", apply_drain)
    b.grant(2)
    b.revoke(1)
    assert calls == [({1, 2}, {3}, {1}), (frozenset(), {3}, {1})]

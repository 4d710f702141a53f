"""Turn the ``iptables-save`` output of every existing host into findings and a starting config.

Why check agreement: hash-bucket sharing only works when every host hashes identically (same VIP,
MAC, bucket total, hash settings) and each bucket is accepted by exactly one host. Hand-maintained
rules drift; importing a drifted cluster would bake the drift into the controller's config. So the
import refuses (error findings, no config) when hosts disagree, and writes a config that
``config check`` accepts when they agree, except for placeholders for facts the rules do not hold
(the interface when rules have no ``-i``; the multicast MAC of an xt_cluster setup).

Buckets nobody serves today are a warning, not an error: the config gives them a home host (the one
with the fewest buckets), which fixes the hole the old setup had.

Pure: the CLI reads the files and passes (host id, text) pairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from controller.core.config import INTERFACE_PLACEHOLDER, MAC_PLACEHOLDER, is_safe_name, parse_config
from controller.core.errors import ConfigError
from controller.core.iptables_save import ClusterRule, Finding, parse_iptables_save
from controller.core.model import IPAddress

__all__ = ["Finding", "ImportResult", "ImportedCluster", "import_iptables_save", "render_config"]


@dataclass(frozen=True)
class ImportedCluster:
    """One VIP as the hosts agree on it. ``homes`` maps host id to its home buckets."""

    name: str
    vip: IPAddress
    backend: str
    interface: str | None
    total: int
    mac: str | None
    protocol: str
    ports: tuple[int, ...]
    hash_mode: str | None
    hash_init: int | None
    seed: int | None
    homes: tuple[tuple[str, tuple[int, ...]], ...]
    unserved: tuple[int, ...]


@dataclass(frozen=True)
class ImportResult:
    """Findings, the clusters found and, unless an error was found, the config text."""

    findings: tuple[Finding, ...]
    clusters: tuple[ImportedCluster, ...]
    config_text: str | None

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


def import_iptables_save(
    dumps: Sequence[tuple[str, str]], *, interface: str | None = None, name: str | None = None,
    mac: str | None = None,
) -> ImportResult:
    """Import ``(host id, iptables-save text)`` pairs, one per host.

    ``interface`` fills in (or overrides) the interface; ``name`` names the cluster when the hosts
    share exactly one VIP (the default name is derived from the VIP); ``mac`` supplies the cluster
    MAC that xt_cluster rules do not contain (it must match CLUSTERIP rules' --clustermac).
    """
    findings: list[Finding] = []
    rules: list[ClusterRule] = []
    hosts: list[str] = []
    for host, dump in dumps:
        if not is_safe_name(host):
            findings.append(Finding("error", None, f"host id {host!r} is not a valid id ([A-Za-z0-9._-], 1..64): "
                                    "rename the file or pass --host-id"))
            continue
        if host in hosts:
            findings.append(Finding("error", host, "given twice: pass each host's output once"))
            continue
        hosts.append(host)
        found, notes = parse_iptables_save(dump, host)
        findings.extend(notes)
        if not found and not notes:
            findings.append(Finding("error", host, "no CLUSTERIP or '-m cluster' rule found: save the rules on "
                                    "that host as root (iptables-legacy-save for the legacy tables)"))
        rules.extend(_resolve_reuse(found, findings))
    groups: dict[IPAddress, list[ClusterRule]] = {}
    for rule in rules:
        groups.setdefault(rule.vip, []).append(rule)
    if name is not None and len(groups) > 1:
        findings.append(Finding("error", None, f"--name names one cluster, but the hosts share {len(groups)} VIPs: "
                                "drop --name (names are derived from the VIPs)"))
    clusters: list[ImportedCluster] = []
    for vip, group in groups.items():
        cluster_name = name if name is not None and len(groups) == 1 else _default_name(vip)
        cluster = _merge(cluster_name, vip, group, hosts, interface, mac, findings)
        if cluster is not None:
            clusters.append(cluster)
    text: str | None = None
    if clusters and not any(f.severity == "error" for f in findings):
        text = render_config(clusters, hosts)
        findings.extend(_self_check(text))
        if any(f.severity == "error" for f in findings):
            text = None
    return ImportResult(tuple(findings), tuple(clusters), text)


def _default_name(vip: IPAddress) -> str:
    return "vip-" + str(vip).replace(":", "-")


def _resolve_reuse(rules: list[ClusterRule], findings: list[Finding]) -> list[ClusterRule]:
    """Give CLUSTERIP rules without --new the settings of the same host's --new rule for that VIP."""
    defining = {r.vip: r for r in rules if r.total is not None}
    out: list[ClusterRule] = []
    for rule in rules:
        if rule.total is not None:
            out.append(rule)
            continue
        base = defining.get(rule.vip)
        if base is None:
            findings.append(Finding("error", rule.host, f"line {rule.line}: CLUSTERIP rule for {rule.vip} without "
                                    "--new and no --new rule for that VIP: the kernel would refuse it; add the "
                                    "--new rule's output"))
            continue
        out.append(ClusterRule(
            host=rule.host, line=rule.line, table=rule.table, chain=rule.chain, backend=rule.backend, vip=rule.vip,
            interface=rule.interface, protocol=rule.protocol, ports=rule.ports, total=base.total,
            buckets=base.buckets, mac=base.mac, hash_mode=base.hash_mode, hash_init=base.hash_init, seed=base.seed,
        ))
    return out


def _agree(
    vip: IPAddress, label: str, values: dict[str, Hashable], findings: list[Finding]
) -> Hashable | None:
    """The single value all hosts have for ``label``, or None after an error finding listing who has what."""
    by_value: dict[Hashable, list[str]] = {}
    for host, value in values.items():
        by_value.setdefault(value, []).append(host)
    if len(by_value) == 1:
        return next(iter(by_value))
    if by_value:
        listing = "; ".join(f"{_show(v)} on {', '.join(hs)}" for v, hs in by_value.items())
        findings.append(Finding("error", None, f"{vip}: hosts disagree on {label}: {listing}; "
                                "make it identical on every host, then import again"))
    return None


def _show(value: object) -> str:
    if value is None:
        return "all ports"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _per_host(group: list[ClusterRule], get: Callable[[ClusterRule], Hashable]) -> dict[str, Hashable]:
    """One value per host; a host whose own rules differ shows up under a 'host line N' label."""
    out: dict[str, Hashable] = {}
    for rule in group:
        value = get(rule)
        if rule.host in out and out[rule.host] != value:
            out[f"{rule.host} line {rule.line}"] = value
        else:
            out.setdefault(rule.host, value)
    return out


def _merge(
    name: str, vip: IPAddress, group: list[ClusterRule], hosts: list[str], interface: str | None,
    given_mac: str | None, findings: list[Finding],
) -> ImportedCluster | None:
    before = sum(f.severity == "error" for f in findings)
    members = [h for h in hosts if any(r.host == h for r in group)]
    for host in hosts:
        if host not in members:
            findings.append(Finding("error", host, f"has no rule for {vip}, which {', '.join(members)} share: "
                                    "add the rule or leave this host's file out"))
    backend = _agree(vip, "the mechanism", _per_host(group, lambda r: r.backend), findings)
    total = _agree(vip, "the bucket total", _per_host(group, lambda r: r.total), findings)
    mac = _agree(vip, "the cluster MAC", _per_host(group, lambda r: r.mac), findings)
    if given_mac is not None:
        if isinstance(mac, str) and mac != given_mac.upper():
            findings.append(Finding("error", None, f"{vip}: --cluster-mac {given_mac} differs from the rules' "
                                    f"--clustermac {mac}: drop --cluster-mac or fix the rules"))
        mac = given_mac.upper()
    mode = _agree(vip, "the hash mode", _per_host(group, lambda r: r.hash_mode), findings)
    hash_init = _agree(vip, "the hash init", _per_host(group, lambda r: r.hash_init), findings)
    seed = _agree(vip, "the hash seed", _per_host(group, lambda r: r.seed), findings)
    protocol = _agree(vip, "the protocol", _per_host(group, lambda r: r.protocol), findings)
    ports = _agree(vip, "the ports", _host_ports(group), findings)
    if interface is None:
        named = [r for r in group if r.interface is not None]
        interface = str(_agree(vip, "the interface (-i)", _per_host(named, lambda r: r.interface), findings)) \
            if named else None
    claimed: dict[int, str] = {}
    homes: dict[str, list[int]] = {h: [] for h in members}
    for rule in group:
        for bucket in sorted(rule.buckets):
            if bucket in homes[rule.host]:
                continue
            if bucket in claimed:
                findings.append(Finding("error", None, f"{vip}: bucket {bucket} is claimed by both {claimed[bucket]} "
                                        f"and {rule.host}: clients in it get two answers; fix the local node numbers"))
                continue
            claimed[bucket] = rule.host
            homes[rule.host].append(bucket)
    if sum(f.severity == "error" for f in findings) > before or not isinstance(total, int):
        return None
    unserved = tuple(b for b in range(1, total + 1) if b not in claimed)
    for bucket in unserved:
        host = min(members, key=lambda h: len(homes[h]))
        homes[host].append(bucket)
        findings.append(Finding("warning", None, f"{vip}: bucket {bucket} is served by nobody today (1 in {total} "
                                f"clients get no answer); the config makes {host} its home"))
    return ImportedCluster(
        name=name, vip=vip, backend=str(backend), interface=interface, total=total,
        mac=mac if isinstance(mac, str) else None, protocol=str(protocol),
        ports=ports if isinstance(ports, tuple) else (),
        hash_mode=mode if isinstance(mode, str) else None,
        hash_init=hash_init if isinstance(hash_init, int) else None,
        seed=seed if isinstance(seed, int) else None,
        homes=tuple((h, tuple(sorted(homes[h]))) for h in members),
        unserved=unserved,
    )


def _host_ports(group: list[ClusterRule]) -> dict[str, Hashable]:
    """Each host's set of ports over all its rules for the VIP (None: every port)."""
    ports: dict[str, set[int] | None] = {}
    for rule in group:
        have = ports.get(rule.host, set())
        ports[rule.host] = None if have is None or rule.ports is None else have | set(rule.ports)
    return {h: None if p is None else tuple(sorted(p)) for h, p in ports.items()}


def _self_check(text: str) -> list[Finding]:
    """Validate the generated config: placeholders are warnings to act on, anything else a bug."""
    try:
        parse_config(text, "<generated>")
    except ConfigError as err:
        return [Finding("warning" if "placeholder" in p else "error", None, f"generated config: {p}")
                for p in err.problems]
    return []


def render_config(clusters: Sequence[ImportedCluster], hosts: Sequence[str]) -> str:
    """The config file for ``clusters`` as commented YAML (strings JSON-quoted, which YAML accepts)."""
    q = json.dumps
    lines = [
        "# Starting configuration written by `clusterip-ctl import iptables-save` from the rules of:",
        f"#   {', '.join(hosts)}",
        "# Home buckets are each host's --local-node / --cluster-local-nodemask as iptables-save shows them",
        "# (CLUSTERIP buckets moved later through /proc/net/ipt_CLUSTERIP do not show there).",
        "# SSH addresses default to the host id and port 22: change them where that is not how the",
        "# controller reaches the host. Then run: clusterip-ctl config check FILE",
        "zookeeper:",
        '  hosts: "127.0.0.1:2181"          # your ZooKeeper ensemble',
        "  chroot: /clusterip-failover",
        "  session_timeout_s: 4.0",
        "clusters:",
    ]
    for c in clusters:
        interface = q(c.interface) if c.interface else f"{q(INTERFACE_PLACEHOLDER)}  # the rules have no -i: fill in"
        mac = q(c.mac) if c.mac else f"{q(MAC_PLACEHOLDER)}  # xt_cluster rules do not hold it: fill in"
        if c.backend == "clusterip":
            hash_line = f"{{mode: {c.hash_mode or 'sourceip'}, hash_init: {c.hash_init or 0}}}"
        else:
            hash_line = f'{{seed: "{(c.seed or 0):#010x}"}}'
        lines += [
            f"  - name: {q(c.name)}",
            f"    vip: {q(str(c.vip))}",
            f"    interface: {interface}",
            f"    backend: {c.backend}",
            f"    buckets: {c.total}",
            f"    cluster_mac: {mac}",
            f"    protocol: {c.protocol}",
            f"    ports: [{', '.join(map(str, c.ports))}]" + ("" if c.ports else "  # empty: every port of the VIP"),
            f"    hash: {hash_line}",
            "    hosts:",
        ]
        for host, buckets in c.homes:
            note = [b for b in buckets if b in c.unserved]
            comment = f"  # bucket {', '.join(map(str, note))} was served by nobody" if note else ""
            lines.append(f"      - {{id: {q(host)}, ssh: {q(host + ':22')}, "
                         f"home_buckets: [{', '.join(map(str, buckets))}]}}{comment}")
    return "\n".join(lines) + "\n"

"""Read the cluster rules (CLUSTERIP target, xt_cluster match) out of one host's ``iptables-save`` text.

Why parse the saved text rather than ask the kernel: migration starts from hosts we do not control
yet, possibly without CLUSTERIP in the running kernel; ``iptables-save`` output is what an operator
can collect from every host with one command. Only the options that define bucket ownership are
interpreted; every other rule is skipped. Anything the controller could not reproduce (negated
matches, subnets, port ranges) becomes a finding rather than a silent guess.

Pure: text in, records out.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, replace
from typing import Literal

from controller.core.model import Backend, IPAddress

__all__ = ["ClusterRule", "Finding", "parse_iptables_save"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """Something the import noticed. Errors stop the config from being written; warnings do not."""

    severity: Severity
    host: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.host}: " if self.host else ""
        return f"{self.severity}: {where}{self.message}"


@dataclass(frozen=True)
class ClusterRule:
    """One rule that shares a VIP by hash buckets, as written on one host.

    ``total`` is None for a CLUSTERIP rule without ``--new`` (it reuses the VIP's existing config).
    ``ports`` is None when the rule matches every port.
    """

    host: str
    line: int
    table: str
    chain: str
    backend: Backend
    vip: IPAddress
    interface: str | None
    protocol: str
    ports: tuple[int, ...] | None
    total: int | None
    buckets: frozenset[int]
    mac: str | None = None
    hash_mode: str | None = None
    hash_init: int | None = None
    seed: int | None = None


_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "tcp": "tcp", "udp": "udp", "all": "all", "0": "all"}
_VALUE_OPTIONS = {
    "-i": "interface", "--in-interface": "interface",
    "-d": "destination", "--destination": "destination", "--dst": "destination",
    "-p": "protocol", "--protocol": "protocol",
    "-j": "target", "--jump": "target",
    "--dport": "dport", "--destination-port": "dport",
    "--dports": "dports", "--destination-ports": "dports",
    "--hashmode": "hashmode", "--clustermac": "clustermac", "--total-nodes": "total",
    "--local-node": "local_node", "--hash-init": "hash_init",
    "--cluster-total-nodes": "c_total", "--cluster-local-nodemask": "c_mask",
    "--cluster-local-node": "c_node", "--cluster-hash-seed": "c_seed",
}
_MATCH_OPTIONS = {"-m", "--match"}


class _RuleProblem(Exception):
    """Internal: this rule cannot be imported; the message says why and what to do."""


#: iptables-save of a busy firewall is a few MB; a bigger input is not one host's rules.
MAX_SAVE_CHARS = 32 * 1024 * 1024


def parse_iptables_save(text: str, host: str) -> tuple[list[ClusterRule], list[Finding]]:
    """Every cluster rule in ``text`` (one host's iptables-save output) plus findings about it."""
    rules: list[ClusterRule] = []
    findings: list[Finding] = []
    if len(text) > MAX_SAVE_CHARS:
        findings.append(Finding("error", host, f"{len(text)} characters is more than the {MAX_SAVE_CHARS} "
                                "read; pass only the output of iptables-save"))
        return rules, findings
    table = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
            continue
        if not line.startswith("-A "):
            continue
        try:
            tokens = shlex.split(line)
        except ValueError as err:
            findings.append(Finding("warning", host, f"line {number}: skipped, cannot split it ({err})"))
            continue
        try:
            rule = _parse_rule(tokens, host, number, table)
        except _RuleProblem as err:
            findings.append(Finding("error", host, f"line {number}: {err}"))
            continue
        if rule is not None:
            rules.append(rule)
    if not table and not rules:
        findings.append(Finding("error", host, "no '*table' line: this does not look like iptables-save output; "
                                "run iptables-save (or iptables-legacy-save) on the host as root"))
    return rules, findings


def _parse_rule(tokens: list[str], host: str, number: int, table: str) -> ClusterRule | None:
    chain = tokens[1] if len(tokens) > 1 else ""
    values: dict[str, str] = {}
    negated: set[str] = set()
    matches: set[str] = set()
    new = False
    negate = False
    index = 2
    while index < len(tokens):
        token = tokens[index]
        if token == "!":
            negate = True
            index += 1
            continue
        if token in _MATCH_OPTIONS and index + 1 < len(tokens):
            matches.add(tokens[index + 1])
            index += 2
        elif token in _VALUE_OPTIONS and index + 1 < len(tokens):
            key = _VALUE_OPTIONS[token]
            values[key] = tokens[index + 1]
            if negate:
                negated.add(token)
            index += 2
        else:
            new = new or token == "--new"
            index += 1
        negate = False
    is_clusterip = values.get("target") == "CLUSTERIP"
    is_xt_cluster = "cluster" in matches or "c_total" in values
    if not (is_clusterip or is_xt_cluster):
        return None
    if is_clusterip and is_xt_cluster:
        raise _RuleProblem("a rule with both -m cluster and -j CLUSTERIP; keep one mechanism per VIP")
    if negated:
        raise _RuleProblem(f"negated {', '.join(sorted(negated))} cannot be imported; "
                           "rewrite the rule without '!' or write the config by hand")
    vip = _destination(values.get("destination"))
    protocol = _protocol(values.get("protocol"))
    ports = _ports(values, protocol)
    base = ClusterRule(host=host, line=number, table=table, chain=chain, backend="clusterip", vip=vip,
                       interface=values.get("interface"), protocol=protocol, ports=ports, total=None,
                       buckets=frozenset())
    if is_clusterip:
        if vip.version != 4:
            raise _RuleProblem("CLUSTERIP is IPv4 only; this rule's destination is IPv6")
        if not new:
            return base
        total = _integer(values, "total", "--total-nodes", 1, 16)
        node = _integer(values, "local_node", "--local-node", 1, 16)
        if node > total:
            raise _RuleProblem(f"--local-node {node} is above --total-nodes {total}")
        mac = values.get("clustermac")
        if mac is None:
            raise _RuleProblem("CLUSTERIP --new without --clustermac; add the cluster MAC to the rule")
        return replace(
            base, total=total, buckets=frozenset({node}), mac=mac.upper(),
            hash_mode=values.get("hashmode", "sourceip"), hash_init=_u32(values.get("hash_init", "0"), "--hash-init"),
        )
    total = _integer(values, "c_total", "--cluster-total-nodes", 1, 32)
    if "c_mask" in values:
        mask = _u32(values["c_mask"], "--cluster-local-nodemask")
        buckets = frozenset(bit + 1 for bit in range(32) if mask >> bit & 1)
    elif "c_node" in values:
        buckets = frozenset({_integer(values, "c_node", "--cluster-local-node", 1, 32)})
    else:
        raise _RuleProblem("-m cluster without --cluster-local-nodemask or --cluster-local-node")
    if any(b > total for b in buckets):
        raise _RuleProblem(f"the local node mask names buckets above --cluster-total-nodes {total}")
    seed = _u32(values.get("c_seed", "0"), "--cluster-hash-seed")
    return replace(base, backend="xt_cluster", total=total, buckets=buckets, seed=seed)


def _destination(text: str | None) -> IPAddress:
    if text is None:
        raise _RuleProblem("the rule has no -d: name the VIP with -d ADDRESS so the rule covers one address")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _RuleProblem(f"-d {_show(text)} is not an address; iptables-save prints numeric addresses") from None
    if network.num_addresses != 1:
        raise _RuleProblem(f"-d {_show(text)} is a subnet; a cluster shares exactly one VIP (/32 or /128)")
    return network.network_address


def _protocol(text: str | None) -> str:
    if text is None:
        return "all"
    name = _PROTOCOL_NAMES.get(text.lower())
    if name is None:
        raise _RuleProblem(
            f"-p {_show(text)}: the config supports tcp, udp or all; change the rule or write it by hand"
        )
    return name


def _ports(values: dict[str, str], protocol: str) -> tuple[int, ...] | None:
    spec = values.get("dports") or values.get("dport")
    if spec is None:
        return None
    ports: list[int] = []
    for part in spec.split(","):
        if ":" in part or not _is_number(part, 5) or not 0 < int(part) < 65536:
            raise _RuleProblem(f"destination port {_show(part)!r} is not a single port; list single ports in the rule")
        ports.append(int(part))
    if protocol == "all":
        raise _RuleProblem("a port match without -p tcp or -p udp")
    return tuple(sorted(set(ports)))


def _integer(values: dict[str, str], key: str, option: str, lo: int, hi: int) -> int:
    text = values.get(key)
    if text is None:
        raise _RuleProblem(f"{option} is missing")
    if not _is_number(text, 10) or not lo <= int(text) <= hi:
        raise _RuleProblem(f"{option} {_show(text)} is not a number in {lo}..{hi}")
    return int(text)


def _is_number(text: str, digits: int) -> bool:
    """ASCII decimal of at most ``digits`` digits (str.isdigit also accepts "²", which int() refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= digits


def _show(text: str) -> str:
    """A value from the input, cut so that one hostile token cannot make a finding pages long."""
    return text if len(text) <= 40 else text[:40] + "..."


def _u32(text: str, option: str) -> int:
    if len(text) > 20:  # "0xffffffff" / "4294967295"; int() of thousands of digits is slow
        raise _RuleProblem(f"{option} {_show(text)} is not a number")
    try:
        value = int(text, 0)
    except ValueError:
        raise _RuleProblem(f"{option} {_show(text)} is not a number") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise _RuleProblem(f"{option} {_show(text)} does not fit in 32 bits")
    return value

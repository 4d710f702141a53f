"""Parse and validate the YAML configuration into the immutable model (``Config``).

Why a hand-written validator rather than a schema library: every mistake must come back at once, as
one line naming the key path (``clusters[0].hosts[2].home_buckets``) and the fix, and several rules
span keys (home buckets against the bucket count, IPv6 against the backend, hash keys against the
backend). ``parse_config`` raises ``ConfigError`` carrying all problems, never anything else.

Pure: takes the file's text; reading the file is the CLI's job. docs/configuration.md describes
every key.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, ScalarNode

from controller.core.config_reader import (
    Problems,
    check_keys,
    child,
    choice,
    integer,
    item,
    mapping,
    section,
    sequence,
    show,
    string,
    u32,
)
from controller.core.errors import ConfigError
from controller.core.model import (
    BACKENDS,
    HASH_MODES,
    MAX_BUCKETS,
    Backend,
    ClusterSpec,
    Config,
    FailbackSettings,
    HandoffSettings,
    HashMode,
    HashSettings,
    HostSpec,
    IPAddress,
    ProbeSettings,
    ZooKeeperSettings,
    default_failback_policy,
)
from controller.core.profiles import DEFAULT_PROFILE, PROFILES, Profile

__all__ = [
    "INTERFACE_PLACEHOLDER",
    "MAC_PLACEHOLDER",
    "NAME_RE",
    "is_safe_name",
    "parse_config",
]

#: Values ``import iptables-save`` writes when the rules do not say; ``config check`` rejects them.
INTERFACE_PLACEHOLDER = "<fill in: interface>"
MAC_PLACEHOLDER = "<fill in: multicast MAC>"

#: Host ids and cluster names become znode names: a safe, bounded alphabet.
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_IFNAMSIZ = 16  # the kernel's limit includes the trailing NUL

_TOP_KEYS = ("profile", "zookeeper", "clusters")
_CLUSTER_KEYS = (
    "name", "vip", "interface", "backend", "buckets", "cluster_mac", "protocol", "ports",
    "hash", "hosts", "profile", "probe", "failback", "handoff",
)
_CLUSTER_REQUIRED = ("name", "vip", "interface", "backend", "buckets", "cluster_mac", "hosts")
_HOST_KEYS = ("id", "ssh", "home_buckets")
_HASH_KEYS = ("mode", "hash_init", "seed")
_PROTOCOLS = ("tcp", "udp", "all")
_EXAMPLE = "see deploy/examples/seed-unix0.yaml"


def is_safe_name(name: str) -> bool:
    """Whether ``name`` can be a znode name: [A-Za-z0-9._-], 1..64 characters, not . or .."""
    return bool(NAME_RE.fullmatch(name)) and name not in (".", "..")


def parse_config(text: str, source: str = "<config>") -> Config:
    """The configuration in ``text``; raises ``ConfigError`` listing every problem found."""
    probs = Problems()
    data, loaded = _load_yaml(text, probs)
    config = _read_config(data, probs) if loaded else None
    if probs.items or config is None:
        raise ConfigError(probs.items or ["<top level>: no configuration found; see docs/configuration.md"], source)
    return config


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that records duplicate keys (PyYAML silently keeps the last one)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                self.duplicates.append(
                    f"line {line}: duplicate key {key_node.value!r} (also on line {seen[key_node.value]}); "
                    "keep only one of them"
                )
            else:
                seen[key_node.value] = line
        return cast(dict[Any, Any], super().construct_mapping(node, deep=deep))


#: Values a configuration may hold with its aliases expanded: real files have a few hundred. Keeps an
#: alias bomb (``&a [*b, *b, ...]`` nested) from making the validator walk billions of values.
MAX_YAML_NODES = 100_000


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes ``root`` has once aliases are expanded (shared nodes counted each time they are
    used); stops early past the limit. Iterative and memoised per node, so it costs O(unique nodes)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            kids: list[yaml.Node] = list(node.value)
        elif isinstance(node, MappingNode):
            kids = [n for pair in node.value for n in pair]
        else:
            sizes[id(node)] = 1
            continue
        if not children_done:
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids if id(kid) not in sizes and kid is not node)
            continue
        # a recursive alias (a node inside itself) counts as over the limit
        sizes[id(node)] = min(MAX_YAML_NODES + 1, 1 + sum(sizes.get(id(kid), MAX_YAML_NODES + 1) for kid in kids))
    return sizes[id(root)]


def _load_yaml(text: str, probs: Problems) -> tuple[object, bool]:
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is not None and _expanded_size(node) > MAX_YAML_NODES:
            probs.items.append(f"YAML: over {MAX_YAML_NODES} values once aliases are expanded (or an alias "
                               "inside itself); write the configuration out instead of nesting aliases (*name)")
            return None, False
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        what = " ".join(p for p in (err.context, err.problem) if p) or "invalid YAML"
        probs.items.append(f"{where}: YAML syntax error: {what}; fix the YAML there (indentation, colons, quotes)")
        return None, False
    except yaml.YAMLError as err:
        probs.items.append(f"YAML: cannot read the file: {str(err).splitlines()[0]}; fix the YAML syntax")
        return None, False
    except RecursionError:
        probs.items.append("YAML: nesting is too deep; write a flat configuration as in the docs")
        return None, False
    except (ValueError, OverflowError, TypeError) as err:  # e.g. timestamp 2024-13-40
        probs.items.append(f"YAML: a value cannot be read ({err}); quote values that are not numbers or dates")
        return None, False
    finally:
        if loader is not None:
            loader.dispose()
    probs.items.extend(loader.duplicates)
    return data, True


# --------------------------------------------------------------------------- top level


def _read_config(data: object, probs: Problems) -> Config | None:
    if data is None:
        probs.add("", "the file is empty", f"add a 'clusters:' list ({_EXAMPLE})")
        return None
    top = mapping(data, "", probs, hint=f"start with 'zookeeper:' and 'clusters:' ({_EXAMPLE})")
    if top is None:
        return None
    check_keys(top, "", _TOP_KEYS, ("clusters",), probs)
    profile = _profile(top.get("profile", DEFAULT_PROFILE), "profile", probs, PROFILES[DEFAULT_PROFILE])
    zookeeper = _read_zookeeper(top.get("zookeeper"), probs, profile)
    clusters: list[ClusterSpec] = []
    if "clusters" in top:
        nodes = sequence(top["clusters"], "clusters", probs, "clusters: [{name: ..., ...}]")
        if nodes is not None and not nodes:
            probs.add("clusters", "the list is empty", "describe at least one cluster")
        for index, node in enumerate(nodes or ()):
            spec = _read_cluster(node, item("clusters", index), probs, profile)
            if spec is not None:
                clusters.append(spec)
        _check_unique_clusters(nodes or [], clusters, probs)
    return Config(zookeeper, tuple(clusters), profile.name)


def _profile(value: object, path: str, probs: Problems, fallback: Profile) -> Profile:
    """A named set of defaults (controller/core/profiles.py); explicit keys still override it."""
    name = choice(value, path, probs, tuple(PROFILES))
    return PROFILES.get(name, fallback) if name is not None else fallback


def _read_zookeeper(value: object, probs: Problems, profile: Profile) -> ZooKeeperSettings:
    zk = section(ZooKeeperSettings(session_timeout_s=profile.session_timeout_s), value, "zookeeper", probs)
    for part in zk.hosts.split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "2181")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            probs.add("zookeeper.hosts", f"{part.strip()!r} is not host:port", 'write "host:2181[,host2:2181...]"')
            break
    chroot = zk.chroot
    segments = chroot.split("/")[1:]
    if chroot != "/" and (not chroot.startswith("/") or any(s in ("", ".", "..") for s in segments)):
        probs.add("zookeeper.chroot", f"{chroot!r} is not an absolute znode path", "write e.g. /clusterip-failover")
    for name in ("session_timeout_s", "connect_timeout_s"):
        if getattr(zk, name) <= 0:
            probs.add(child("zookeeper", name), "must be above 0", "give a number of seconds such as 4")
    _check_zookeeper_files(zk, probs)
    return zk


def _check_zookeeper_files(zk: ZooKeeperSettings, probs: Problems) -> None:
    """Secrets are named by absolute file paths (never written inline); TLS needs its files together."""
    for name in ("auth_file", "ca_file", "cert_file", "key_file"):
        value = getattr(zk, name)
        if value and not value.startswith("/"):
            probs.add(child("zookeeper", name), f"{value!r} is not an absolute path",
                      "name a file such as /etc/clusterip-failover/zk.secret (never the secret itself)")
    if bool(zk.cert_file) != bool(zk.key_file):
        probs.add("zookeeper.key_file", "cert_file and key_file must be set together",
                  "set both (client certificate) or neither")
    if (zk.ca_file or zk.cert_file) and not zk.use_ssl:
        probs.add("zookeeper.use_ssl", "TLS files are set but use_ssl is false", "set use_ssl: true")


def _check_unique_clusters(nodes: list[Any], clusters: list[ClusterSpec], probs: Problems) -> None:
    """Cluster names and VIPs must be unique: both key ZooKeeper paths and kernel state."""
    names: dict[str, int] = {}
    vips: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if not isinstance(node, dict):
            continue
        name, vip = node.get("name"), node.get("vip")
        path = item("clusters", index)
        if isinstance(name, str):
            if name in names:
                probs.add(child(path, "name"), f"duplicate cluster name {name!r} (also clusters[{names[name]}])",
                          "give every cluster its own name")
            names.setdefault(name, index)
        if isinstance(vip, str):
            key = _normal_ip(vip)
            if key in vips:
                probs.add(child(path, "vip"), f"VIP {vip} is already used by clusters[{vips[key]}]",
                          "one cluster per VIP: merge them (ports: [..]) or pick another address")
            vips.setdefault(key, index)


def _normal_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return text


# --------------------------------------------------------------------------- one cluster


def _read_cluster(node: object, path: str, probs: Problems, top_profile: Profile) -> ClusterSpec | None:
    data = mapping(node, path, probs, hint=f"each cluster is a mapping ({_EXAMPLE})")
    if data is None:
        return None
    before = len(probs)
    check_keys(data, path, _CLUSTER_KEYS, _CLUSTER_REQUIRED, probs)

    def at(key: str) -> str:
        return child(path, key)

    name = _name(data.get("name"), at("name"), probs, "cluster name") if "name" in data else None
    backend_name = choice(data["backend"], at("backend"), probs, BACKENDS) if "backend" in data else None
    backend = cast(Backend | None, backend_name)
    vip = _vip(data["vip"], at("vip"), backend, probs) if "vip" in data else None
    interface = _interface(data["interface"], at("interface"), probs) if "interface" in data else None
    buckets = _buckets(data["buckets"], at("buckets"), backend, probs) if "buckets" in data else None
    mac = _mac(data["cluster_mac"], at("cluster_mac"), probs) if "cluster_mac" in data else None
    protocol = choice(data.get("protocol", "tcp"), at("protocol"), probs, _PROTOCOLS)
    ports = _ports(data.get("ports", []), at("ports"), protocol, probs)
    hash_settings = _hash(data.get("hash"), at("hash"), backend, probs)
    hosts = _hosts(data["hosts"], at("hosts"), buckets, probs) if "hosts" in data else None
    profile = _profile(data["profile"], at("profile"), probs, top_profile) if "profile" in data else top_profile
    probe = _probe(data.get("probe"), at("probe"), probs, profile.probe)
    failback_default = FailbackSettings(policy=default_failback_policy(backend)) if backend else FailbackSettings()
    failback = section(failback_default, data.get("failback"), at("failback"), probs)
    if failback.hold_down_s < 0:
        probs.add(at("failback.hold_down_s"), "must not be negative", "use 0 or more seconds")
    if not 0.05 <= failback.drain_poll_s <= 60:
        probs.add(at("failback.drain_poll_s"), f"{failback.drain_poll_s:g} is outside 0.05..60",
                  "use e.g. 0.5 (seconds between session counts of a draining hook)")
    handoff = _handoff(data.get("handoff"), at("handoff"), probs, profile.handoff)

    if len(probs) > before or None in (name, backend, vip, interface, buckets, mac, protocol, hosts):
        return None
    return ClusterSpec(
        name=cast(str, name), vip=cast(IPAddress, vip), interface=cast(str, interface),
        backend=cast(Backend, backend), buckets=cast(int, buckets), cluster_mac=cast(str, mac),
        hosts=cast(tuple[HostSpec, ...], hosts), hash=hash_settings, ports=ports,
        protocol=cast(Any, protocol), probe=probe, handoff=handoff, failback=failback,
    )


def _name(value: object, path: str, probs: Problems, what: str) -> str | None:
    text = string(value, path, probs)
    if text is not None and not is_safe_name(text):
        probs.add(path, f"{show(text)} is not a valid {what}", "use 1..64 of A-Z a-z 0-9 . _ - (it names a znode)")
        return None
    return text


def _vip(value: object, path: str, backend: Backend | None, probs: Problems) -> IPAddress | None:
    text = string(value, path, probs)
    if text is None:
        return None
    try:
        vip = ipaddress.ip_address(text.strip())
    except ValueError:
        fix = "write the address without a prefix length" if "/" in text else "write an IPv4 or IPv6 address"
        probs.add(path, f"{show(text)} is not an IP address", fix)
        return None
    if vip.is_multicast or vip.is_unspecified:
        probs.add(path, f"{vip} is not a unicast address", "use the unicast address clients connect to")
        return None
    if vip.version == 6 and backend == "clusterip":
        probs.add(path, f"CLUSTERIP is IPv4 only, got IPv6 address {vip}",
                  "use backend xt_cluster or nftables, or an IPv4 VIP")
        return None
    return vip


def _interface(value: object, path: str, probs: Problems) -> str | None:
    text = string(value, path, probs)
    if text is None:
        return None
    if text == INTERFACE_PLACEHOLDER:
        probs.add(path, "still the placeholder written by 'import iptables-save'",
                  "set the network interface that carries the VIP, e.g. eth0")
        return None
    bad = len(text) >= _IFNAMSIZ or text in (".", "..") or any(c in "/:" or c.isspace() for c in text)
    if bad:
        probs.add(path, f"{show(text)} is not a Linux interface name",
                  "use at most 15 characters without / : or spaces")
        return None
    return text


def _buckets(value: object, path: str, backend: Backend | None, probs: Problems) -> int | None:
    count = integer(value, path, probs, lo=1)
    if count is None or backend is None:
        return count
    limit = MAX_BUCKETS[backend]
    if count > limit:
        bigger = [b for b in BACKENDS if MAX_BUCKETS[b] >= count]
        fix = f"use at most {limit} buckets" + (f" or backend {' / '.join(bigger)}" if bigger else "")
        probs.add(path, f"{count} is above the {backend} limit of {limit}", fix)
        return None
    if backend == "nftables" and count < 2:
        probs.add(path, "nftables cannot hash into 1 bucket (jhash mod 1 is refused)", "use at least 2 buckets")
        return None
    return count


def _mac(value: object, path: str, probs: Problems) -> str | None:
    text = string(value, path, probs)
    if text is None:
        return None
    if text == MAC_PLACEHOLDER:
        probs.add(path, "still the placeholder written by 'import iptables-save'",
                  'set the multicast MAC the hosts share, e.g. "01:00:5E:00:01:64"')
        return None
    if not _MAC_RE.fullmatch(text.strip()):
        probs.add(path, f"{show(text)} is not a MAC address",
                  'write six hex pairs with colons, e.g. "01:00:5E:41:9E:A0"')
        return None
    mac = text.strip().upper()
    if mac == "FF:FF:FF:FF:FF:FF" or not int(mac[:2], 16) & 1:
        probs.add(path, f"{mac} is not a multicast MAC (lowest bit of the first octet must be set)",
                  'use a multicast MAC such as "01:00:5E:xx:xx:xx" (not broadcast)')
        return None
    return mac


def _ports(value: object, path: str, protocol: str | None, probs: Problems) -> tuple[int, ...]:
    values = sequence(value, path, probs, "[22]")
    ports: list[int] = []
    for index, sub in enumerate(values or ()):
        port = integer(sub, item(path, index), probs, lo=1, hi=65535)
        if port is None:
            continue
        if port in ports:
            probs.add(item(path, index), f"port {port} is listed twice", "list each port once")
        else:
            ports.append(port)
    if ports and protocol == "all":
        probs.add(path, "ports need protocol tcp or udp, but protocol is all",
                  "set protocol: tcp (or udp), or remove ports to take every port of the VIP")
    return tuple(ports)


def _hash(value: object, path: str, backend: Backend | None, probs: Problems) -> HashSettings:
    if value is None:
        return HashSettings()
    data = mapping(value, path, probs, hint="write e.g. hash: {mode: sourceip, hash_init: 0}")
    if data is None:
        return HashSettings()
    check_keys(data, path, _HASH_KEYS, (), probs)
    if backend == "clusterip" and "seed" in data:
        probs.add(child(path, "seed"), "clusterip does not use a seed (only xt_cluster and nftables do)",
                  "remove seed; CLUSTERIP's equivalent is hash_init")
    if backend in ("xt_cluster", "nftables"):
        for key in ("mode", "hash_init"):
            if key in data:
                probs.add(child(path, key), f"{backend} hashes the source address with a seed only; it has no {key}",
                          f"remove {key} and set seed")
    settings = HashSettings()
    mode = choice(data["mode"], child(path, "mode"), probs, HASH_MODES) if "mode" in data else settings.mode
    hash_init = u32(data["hash_init"], child(path, "hash_init"), probs) if "hash_init" in data else settings.hash_init
    seed = u32(data["seed"], child(path, "seed"), probs) if "seed" in data else settings.seed
    return HashSettings(
        mode=cast(HashMode, mode or settings.mode),
        hash_init=settings.hash_init if hash_init is None else hash_init,
        seed=settings.seed if seed is None else seed,
    )


def _probe(value: object, path: str, probs: Problems, defaults: ProbeSettings) -> ProbeSettings:
    """Probe settings plus the relations between them that keep failure detection meaningful."""
    probe = section(defaults, value, path, probs)
    for name in ("interval_s", "connect_timeout_s", "banner_timeout_s", "login_interval_s", "login_timeout_s"):
        if getattr(probe, name) <= 0:
            probs.add(child(path, name), "must be above 0", "give a number of seconds such as 0.5")
    for name in ("fall", "rise"):
        if getattr(probe, name) < 1:
            probs.add(child(path, name), "must be at least 1", "count probes: 1 or more")
    window = probe.fall * probe.interval_s
    if probe.interval_s > 0 and probe.fall >= 1:
        for name in ("connect_timeout_s", "banner_timeout_s"):
            if getattr(probe, name) > window + 1e-9:  # tolerate float rounding (3 x 0.15)
                probs.add(child(path, name),
                          f"{getattr(probe, name)} s exceeds fall x interval_s = {window:g} s, so a hung host "
                          "is detected late", "lower the timeout or raise interval_s / fall")
    if probe.banner_timeout_max_s < probe.banner_timeout_s:
        probs.add(child(path, "banner_timeout_max_s"),
                  f"{probe.banner_timeout_max_s} s is below banner_timeout_s ({probe.banner_timeout_s} s)",
                  "the adaptive timeout's cap must be at least its floor (equal: no adaptation)")
    for name in ("late_banner_s", "hold_max_s", "late_sockets_per_host"):
        if getattr(probe, name) < 0:
            probs.add(child(path, name), "must not be negative", "use 0 (off) or more")
    if probe.correlated_fraction <= 0:
        probs.add(child(path, "correlated_fraction"), "must be above 0", "use 0.5 (a majority), or 1 to never hold")
    if 0 < probe.login_interval_s < probe.login_timeout_s:
        probs.add(child(path, "login_timeout_s"),
                  f"{probe.login_timeout_s} s is above login_interval_s ({probe.login_interval_s} s)",
                  "make the login timeout at most the login interval")
    return probe


def _handoff(value: object, path: str, probs: Problems, defaults: HandoffSettings) -> HandoffSettings:
    handoff = section(defaults, value, path, probs)
    if not 0 < handoff.self_fence_fraction < 1:
        probs.add(child(path, "self_fence_fraction"), f"{handoff.self_fence_fraction} is not between 0 and 1",
                  "use a fraction of the session timeout such as 0.5 (exclusive of 0 and 1)")
    if handoff.resync_interval_s <= 0:
        probs.add(child(path, "resync_interval_s"), "must be above 0", "give a number of seconds such as 5")
    return handoff


# --------------------------------------------------------------------------- hosts

_Host = tuple[str, str, int, list[int] | None, bool]


def _hosts(value: object, path: str, buckets: int | None, probs: Problems) -> tuple[HostSpec, ...] | None:
    nodes = sequence(value, path, probs, "[{id: unix1, ssh: 'unix1:22'}]")
    if nodes is None:
        return None
    if not nodes:
        probs.add(path, "the list is empty", "list at least one host")
        return None
    before = len(probs)
    ids: dict[str, int] = {}
    read: list[_Host] = []
    complete = True
    for index, node in enumerate(nodes):
        host = _host(node, item(path, index), buckets, probs)
        host_id = node.get("id") if isinstance(node, dict) else None
        if isinstance(host_id, str) and host_id in ids:
            probs.add(child(item(path, index), "id"), f"duplicate host id {host_id!r} (also hosts[{ids[host_id]}])",
                      "give every host its own id")
            continue
        if isinstance(host_id, str):
            ids[host_id] = index
        if host is None:
            complete = False
        else:
            read.append(host)
            complete = complete and host[4]
    homes = _assign_homes(read, path, buckets, probs, complete)
    if len(probs) > before or homes is None:
        return None
    return tuple(HostSpec(h, tuple(homes[h]), ssh_host, port) for h, ssh_host, port, _, _ in read)


def _host(node: object, path: str, buckets: int | None, probs: Problems) -> _Host | None:
    """(id, ssh host, ssh port, explicit home buckets or None, whether that list was valid)."""
    data = mapping(node, path, probs, hint="write e.g. {id: unix1, ssh: 'unix1.example.edu:22'}")
    if data is None:
        return None
    check_keys(data, path, _HOST_KEYS, ("id",), probs)
    host_id = _name(data["id"], child(path, "id"), probs, "host id") if "id" in data else None
    ssh = _ssh(data["ssh"], child(path, "ssh"), probs) if "ssh" in data else None
    homes: list[int] | None = None
    complete = True
    if "home_buckets" in data:
        homes, complete = _home_buckets(data["home_buckets"], child(path, "home_buckets"), buckets, probs)
    if host_id is None:
        return None
    ssh_host, ssh_port = ssh if ssh is not None else (host_id, 22)
    return host_id, ssh_host, ssh_port, homes, complete


def _ssh(value: object, path: str, probs: Problems) -> tuple[str, int] | None:
    """``host``, ``host:port`` or ``[v6-address]:port``."""
    text = string(value, path, probs)
    if text is None:
        return None
    text = text.strip()
    host, port_text = text, "22"
    if text.startswith("["):
        close = text.find("]")
        host, rest = text[1:close], text[close + 1:]
        if close < 0 or (rest and not rest.startswith(":")):
            host = ""
        port_text = rest[1:] if rest else "22"
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host or any(c.isspace() for c in host) or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        probs.add(path, f"{show(text)} is not host:port", 'write "host.example.edu:22" or "[2001:db8::5]:22"')
        return None
    return host, int(port_text)


def _home_buckets(value: object, path: str, buckets: int | None, probs: Problems) -> tuple[list[int], bool]:
    """The valid home buckets, and whether the list was entirely valid (else unhomed ones are unknown)."""
    values = sequence(value, path, probs, "[1, 2]")
    if values is None:
        return [], False
    homes: list[int] = []
    ok = True
    for index, sub in enumerate(values):
        bucket = integer(sub, item(path, index), probs)
        if bucket is None:
            ok = False
        elif buckets is not None and not 1 <= bucket <= buckets:
            probs.add(path, f"bucket {bucket} is out of range 1..{buckets}",
                      f"use buckets 1..{buckets} or raise 'buckets'")
            ok = False
        elif bucket in homes:
            probs.add(path, f"bucket {bucket} is listed twice", "list each bucket once")
            ok = False
        else:
            homes.append(bucket)
    return sorted(homes), ok


def _assign_homes(
    hosts: list[_Host], path: str, buckets: int | None, probs: Problems, complete: bool
) -> dict[str, list[int]] | None:
    """Home buckets per host: explicit lists as given, the rest of the buckets round robin.

    Every bucket needs a home host, so that failback knows where it belongs. When every host lists
    its home buckets explicitly, a bucket missing from all lists is a mistake and is reported;
    hosts without a list share the remaining buckets round robin (possibly none: a standby).
    """
    if buckets is None:
        return None
    homes: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for index, (host_id, _, _, explicit, _) in enumerate(hosts):
        homes[host_id] = list(explicit or [])
        for bucket in explicit or []:
            if bucket in owner:
                probs.add(child(item(path, index), "home_buckets"),
                          f"bucket {bucket} is already the home of {owner[bucket]!r}",
                          "give each bucket exactly one home host")
            else:
                owner[bucket] = host_id
    free = [b for b in range(1, buckets + 1) if b not in owner]
    implicit = [h for h, _, _, explicit, _ in hosts if explicit is None]
    if free and not implicit and hosts and complete:
        listed = ", ".join(map(str, free))
        what = f"buckets {listed} have" if len(free) > 1 else f"bucket {listed} has"
        probs.add(path, f"{what} no home host",
                  "add them to some host's home_buckets (or omit home_buckets everywhere for round robin)")
        return None
    for offset, bucket in enumerate(free):
        if implicit:
            homes[implicit[offset % len(implicit)]].append(bucket)
    return {h: sorted(b) for h, b in homes.items()}

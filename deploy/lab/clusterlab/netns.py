"""A throw-away cluster of network namespaces on the real kernel: N hosts sharing a VIP, one client.

Why namespaces: the backends (xt_cluster, nftables) need a real kernel data path with link-layer
multicast, ARP and conntrack; namespaces give us that in ~0.5 s without VMs.

Layout (``P`` = run prefix such as ``cif3fa2``; every name carries it so parallel runs never clash)::

    data path (one bridge in its own namespace, 198.18.0.0/22):
      P-br : bridge br0, ports h1..hN, cl
      P-hK : eth0 = 198.18.0.(10+K)/22 + VIP/32, multicast MAC joined (ip maddr), arp_announce=2
      P-cl : eth0 = 198.18.0.2/22 + many /32 source addresses 198.18.1.0, 198.18.1.1, ...
             and (by default) a permanent neighbour entry VIP -> cluster MAC
    with ipv6=True the same again on 2001:2::/64 (VIP 2001:2::100, sources 2001:2::1:0, ...), no DAD
    management (separate, root namespace; for ZooKeeper / controller / probes):
      root : bridge Pmb = 198.19.S.1/24 ("mgmt_gateway"), ports PmK
      P-hK : mgmt0 = 198.19.S.(10+K)/24

A ZooKeeper or controller in the root namespace listens on ``topology.mgmt_gateway``; the hosts reach
it over mgmt0 while clients use only the data bridge. ``S`` is the first /24 of 198.19.0.0/16 not in
use in the root namespace (so usually 198.19.0.1), picked under a lock so concurrent runs differ.

Faults: ``link_down(topo, host, "mgmt")`` disables the host's port on the management bridge (host
keeps carrier, packets vanish silently, like a partition): the host is cut from ZooKeeper but
clients still reach it. ``"data"`` does the same on the data bridge, ``"all"`` both (a dead host).

Crash safety: ``build`` first writes a record (creating PID + its start time) to the state directory;
``remove_stale`` removes leftovers only of runs whose creating process is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clusterlab.errors import LabError

DATA_NET = ipaddress.IPv4Network("198.18.0.0/22")
CLIENT_ADDRESS = "198.18.0.2"
FIRST_SOURCE = ipaddress.IPv4Address("198.18.1.0")
LAST_SOURCE = ipaddress.IPv4Address("198.18.3.254")
MAX_SOURCES = int(LAST_SOURCE) - int(FIRST_SOURCE) + 1
MGMT_NET = ipaddress.IPv4Network("198.19.0.0/16")
# IPv6 (optional, namespaces only): benchmarking range 2001:2::/48; hosts 2001:2::11.., VIP 2001:2::100,
# client 2001:2::2 and sources 2001:2::1:0, 2001:2::1:1, ...
DATA_NET6 = ipaddress.IPv6Network("2001:2::/64")
CLIENT_ADDRESS6 = "2001:2::2"
VIP6 = "2001:2::100"
MAX_HOSTS = 32  # xt_cluster's nodemask is 32 bits; also keeps root link names <= 15 chars
INTERFACE = "eth0"
MGMT_INTERFACE = "mgmt0"
BRIDGE = "br0"
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,9}$")
_TAG_RE = re.compile(r"^[a-z]{1,6}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_CMD_TIMEOUT_S = 30.0

LinkPath = Literal["data", "mgmt", "all"]


def state_dir() -> Path:
    """Where build records live; /run is tmpfs, cleared at boot together with the namespaces."""
    return Path(os.environ.get("CLUSTERLAB_STATE_DIR", "/run/clusterlab"))


@dataclass(frozen=True)
class LabHost:
    """One cluster node: a namespace with eth0 on the data bridge and mgmt0 on the management bridge."""

    name: str  # "h1"
    namespace: str  # "cif3fa2-h1"
    address: str  # data address, 198.18.0.11
    index: int  # 1-based, equals xt_cluster node number / nft offset-1 bucket by convention
    mgmt_address: str  # 198.19.S.11
    bridge_port: str  # name of its port on the data bridge (inside bridge_ns)
    mgmt_link: str  # root-namespace end of its management veth (port of mgmt_bridge)
    address6: str | None = None  # 2001:2::11 when built with ipv6=True


@dataclass(frozen=True)
class LabTopology:
    """Everything a test needs to address the lab; built by :func:`build`, removed by :func:`destroy`."""

    prefix: str
    bridge_ns: str
    bridge: str
    hosts: tuple[LabHost, ...]
    client_ns: str
    client_address: str
    client_sources: tuple[str, ...]
    vip: str
    cluster_mac: str
    interface: str
    mgmt_interface: str
    mgmt_bridge: str
    mgmt_gateway: str
    mgmt_subnet: str
    vip6: str | None = None  # set when built with ipv6=True
    client_sources6: tuple[str, ...] = ()

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"no host {name!r} in lab {self.prefix}; hosts are {[h.name for h in self.hosts]}")

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.bridge_ns, *(h.namespace for h in self.hosts), self.client_ns)


# --------------------------------------------------------------------------- process helpers


def _run(argv: Sequence[str], what: str, *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise LabError(f"{what}: {argv[0]!r} not found; install iproute2") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what}: {' '.join(argv)} hung for {_CMD_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().replace("\n", " | ")
        raise LabError(f"{what} failed ({' '.join(argv[:6])}...): {detail}")
    return proc


def _batch(namespace: str | None, lines: Sequence[str], what: str) -> None:
    """Run many ``ip`` commands in one process (one fork instead of hundreds)."""
    argv = ["ip", "-batch", "-"] if namespace is None else ["ip", "-n", namespace, "-batch", "-"]
    _run(argv, what, stdin="\n".join(lines) + "\n")


def nsexec(
    namespace: str, argv: Sequence[str], *, check: bool = True, timeout: float = _CMD_TIMEOUT_S, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``namespace`` (``ip netns exec``) and capture text output.

    With ``check`` a non-zero exit raises :class:`LabError` carrying stderr, so lab steps fail with
    the tool's own message rather than a CalledProcessError traceback.
    """
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    full = ["ip", "netns", "exec", namespace, *argv]
    try:
        proc: subprocess.CompletedProcess[str] = subprocess.run(full, timeout=timeout, check=False, **kw)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"in {namespace}: {' '.join(argv)} did not finish within {timeout} s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip().replace("\n", " | ")
        raise LabError(f"in {namespace}: {' '.join(argv)} exited {proc.returncode}: {detail}")
    return proc


def popen_in(namespace: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` inside ``namespace``; ``ip netns exec`` execs it, so the Popen pid is the program."""
    return subprocess.Popen(["ip", "netns", "exec", namespace, *argv], **kw)


def list_namespaces() -> list[str]:
    proc = _run(["ip", "netns", "list"], "listing namespaces")
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _root_links() -> list[str]:
    proc = _run(["ip", "-o", "link", "show"], "listing links")
    names = []
    for line in proc.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


# --------------------------------------------------------------------------- ownership records


def _proc_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of ``pid``; tells a live owner from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of stat; fields[0] is field 3


def _record_path(prefix: str) -> Path:
    return state_dir() / f"{prefix}.json"


def _write_record(prefix: str, extra: dict[str, Any]) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    record = {"prefix": prefix, "pid": pid, "pid_start": _proc_start_time(pid), **extra}
    tmp = _record_path(prefix).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(_record_path(prefix))


def _owner_alive(prefix: str) -> bool | None:
    """True/False if a record exists and its creator is alive/gone; None if there is no record."""
    try:
        record = json.loads(_record_path(prefix).read_text())
    except (OSError, ValueError):
        return None
    start = _proc_start_time(int(record["pid"]))
    return start is not None and start == record.get("pid_start")


@contextlib.contextmanager
def _mgmt_lock() -> Iterator[None]:
    """Serialises management-subnet choice between concurrent lab runs."""
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / "mgmt.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_mgmt_subnet() -> ipaddress.IPv4Network:
    proc = _run(["ip", "-4", "-o", "addr", "show"], "listing root addresses")
    used = set()
    for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", proc.stdout):
        addr = ipaddress.IPv4Address(match.group(1))
        if addr in MGMT_NET:
            used.add(ipaddress.IPv4Network(f"{addr}/24", strict=False))
    for subnet in MGMT_NET.subnets(new_prefix=24):
        if subnet not in used:
            return subnet
    raise LabError("all 256 management subnets of 198.19.0.0/16 are in use; run remove_stale or destroy")


# --------------------------------------------------------------------------- validation


def _check_prefix(prefix: str) -> None:
    if not _PREFIX_RE.match(prefix):
        raise LabError(
            f"lab prefix {prefix!r} is invalid: use 2-10 lowercase letters/digits starting with a letter "
            "(interface names must stay <= 15 chars), e.g. new_prefix()"
        )


def _check_build_args(prefix: str, hosts: int, client_sources: int, vip: str, cluster_mac: str) -> None:
    _check_prefix(prefix)
    if not 1 <= hosts <= MAX_HOSTS:
        raise LabError(f"hosts={hosts} is out of range: use 1..{MAX_HOSTS}")
    if not 1 <= client_sources <= MAX_SOURCES:
        raise LabError(f"client_sources={client_sources} is out of range: use 1..{MAX_SOURCES}")
    try:
        vip_addr = ipaddress.IPv4Address(vip)
    except ValueError as exc:
        raise LabError(f"vip {vip!r} is not an IPv4 address: use e.g. 198.18.0.100") from exc
    reserved = {ipaddress.IPv4Address(CLIENT_ADDRESS), *(_host_address(k) for k in range(1, hosts + 1))}
    if vip_addr not in DATA_NET or vip_addr in reserved or vip_addr >= FIRST_SOURCE:
        raise LabError(f"vip {vip} must lie in 198.18.0.3-198.18.0.255 and not be a host address (.11-..)")
    if not _MAC_RE.match(cluster_mac) or not int(cluster_mac[:2], 16) & 1:
        raise LabError(f"cluster_mac {cluster_mac!r} must be a multicast MAC like 01:00:5e:00:01:64")
    if os.geteuid() != 0:
        raise LabError("the namespace lab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run as root")


def _host_address(index: int) -> ipaddress.IPv4Address:
    return DATA_NET.network_address + 10 + index


def _host_address6(index: int) -> str:
    return f"2001:2::{10 + index}"  # reads like the IPv4 one: h1 = 198.18.0.11 / 2001:2::11


def new_prefix(owner_tag: str = "cif") -> str:
    """A fresh run prefix ``<tag><4 hex>`` not used by any namespace or record on this machine."""
    if not _TAG_RE.match(owner_tag):
        raise LabError(f"owner tag {owner_tag!r} is invalid: use 1-6 lowercase letters, e.g. 'cif'")
    existing = list_namespaces()
    for _ in range(64):
        prefix = owner_tag + secrets.token_hex(2)
        in_use = any(ns.startswith(prefix + "-") for ns in existing) or _record_path(prefix).exists()
        if not in_use:
            return prefix
    raise LabError(f"could not find a free prefix for tag {owner_tag!r}; run remove_stale({owner_tag!r})")


# --------------------------------------------------------------------------- build / destroy


def build(
    prefix: str,
    hosts: int = 4,
    client_sources: int = 256,
    vip: str = "198.18.0.100",
    cluster_mac: str = "01:00:5e:00:01:64",
    ipv6: bool = False,
    client_static_neigh: bool = True,
) -> LabTopology:
    """Create the namespaces, bridges and addresses; on any failure everything made so far is removed."""
    _check_build_args(prefix, hosts, client_sources, vip, cluster_mac)
    if any(ns.startswith(prefix + "-") for ns in list_namespaces()):
        raise LabError(f"lab prefix {prefix!r} is already in use: destroy({prefix!r}) or use new_prefix()")
    _write_record(prefix, {"hosts": hosts})
    try:
        return _build(prefix, hosts, client_sources, vip, cluster_mac.lower(), client_static_neigh, ipv6)
    except BaseException:
        destroy(prefix)
        raise


def _build(
    prefix: str, n_hosts: int, n_sources: int, vip: str, mac: str, static_neigh: bool, ipv6: bool
) -> LabTopology:
    bridge_ns, client_ns = f"{prefix}-br", f"{prefix}-cl"
    host_ns = [f"{prefix}-h{k}" for k in range(1, n_hosts + 1)]
    for ns in (bridge_ns, *host_ns, client_ns):
        _run(["ip", "netns", "add", ns], f"creating namespace {ns}")
    # Quiet namespaces: no IPv6 (no DAD/MLD/RS chatter on the bridge), no reverse-path drops.
    base_sysctls = [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ]
    nsexec(bridge_ns, ["sysctl", "-q", "-w", *base_sysctls])
    # With IPv6: enabled on hosts and client only, without DAD (addresses usable at once) or RAs.
    end_sysctls = base_sysctls
    if ipv6:
        end_sysctls = [
            *base_sysctls[2:],
            *(f"net.ipv6.conf.{c}.{k}={v}" for c in ("all", "default", INTERFACE)
              for k, v in (("disable_ipv6", 0), ("accept_dad", 0), ("accept_ra", 0))),
        ]
    # Bridged frames must not traverse the bridge namespace's netfilter (br_netfilter may be loaded).
    for knob in ("iptables", "ip6tables", "arptables"):
        nsexec(bridge_ns, ["sysctl", "-q", "-w", f"net.bridge.bridge-nf-call-{knob}=0"], check=False)

    # STP off and snooping off: ports forward at once and the cluster MAC is flooded to every host.
    lines = [
        "link set lo up",
        f"link add {BRIDGE} type bridge forward_delay 0 stp_state 0 mcast_snooping 0",
        f"link set {BRIDGE} up",
    ]
    for k, ns in enumerate(host_ns, start=1):
        lines += [
            f"link add h{k} type veth peer name {INTERFACE} netns {ns}",
            f"link set h{k} master {BRIDGE}",
            f"link set h{k} up",
        ]
    lines += [
        f"link add cl type veth peer name {INTERFACE} netns {client_ns}",
        f"link set cl master {BRIDGE}",
        "link set cl up",
    ]
    _batch(bridge_ns, lines, "wiring the data bridge")

    with _mgmt_lock():
        subnet = _free_mgmt_subnet()
        gateway = subnet.network_address + 1
        mgmt_bridge = f"{prefix}mb"
        _write_record(prefix, {"hosts": n_hosts, "mgmt_subnet": str(subnet)})
        lines = [f"link add {mgmt_bridge} type bridge forward_delay 0 stp_state 0"]
        for k, ns in enumerate(host_ns, start=1):
            lines += [
                f"link add {prefix}m{k} type veth peer name {MGMT_INTERFACE} netns {ns}",
                f"link set {prefix}m{k} master {mgmt_bridge}",
            ]
        _batch(None, lines, "wiring the management bridge")
        for link in [mgmt_bridge, *(f"{prefix}m{k}" for k in range(1, n_hosts + 1))]:
            with contextlib.suppress(OSError):
                Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1")
        lines = [f"addr add {gateway}/24 dev {mgmt_bridge}", f"link set {mgmt_bridge} up"]
        lines += [f"link set {prefix}m{k} up" for k in range(1, n_hosts + 1)]
        _batch(None, lines, "addressing the management bridge")

    hosts: list[LabHost] = []
    for k, ns in enumerate(host_ns, start=1):
        addr, mgmt_addr = _host_address(k), subnet.network_address + 10 + k
        sysctls = [
            *end_sysctls,
            "net.ipv4.conf.all.arp_announce=2",
            f"net.ipv4.conf.{INTERFACE}.arp_announce=2",
            f"net.ipv4.conf.{INTERFACE}.rp_filter=0",
        ]
        nsexec(ns, ["sysctl", "-q", "-w", *sysctls])
        _batch(
            ns,
            [
                "link set lo up",
                f"addr add {addr}/{DATA_NET.prefixlen} dev {INTERFACE}",
                f"addr add {vip}/32 dev {INTERFACE}",
                f"link set {INTERFACE} up",
                f"addr add {mgmt_addr}/24 dev {MGMT_INTERFACE}",
                f"link set {MGMT_INTERFACE} up",
            ],
            f"configuring host {ns}",
        )
        # Not in the batch: iproute2 6.1 silently ends a batch after any `maddr` line.
        _run(["ip", "-n", ns, "maddr", "add", mac, "dev", INTERFACE], f"joining {mac} on {ns}")
        addr6 = _host_address6(k) if ipv6 else None
        if addr6:
            lines6 = [f"addr add {addr6}/64 dev {INTERFACE} nodad", f"addr add {VIP6}/128 dev {INTERFACE} nodad"]
            _batch(ns, lines6, f"adding IPv6 to host {ns}")
        hosts.append(LabHost(f"h{k}", ns, str(addr), k, str(mgmt_addr), f"h{k}", f"{prefix}m{k}", addr6))

    sources = tuple(str(FIRST_SOURCE + i) for i in range(n_sources))
    sources6 = tuple(f"2001:2::1:{i:x}" for i in range(n_sources)) if ipv6 else ()
    nsexec(client_ns, ["sysctl", "-q", "-w", *end_sysctls, f"net.ipv4.conf.{INTERFACE}.rp_filter=0"])
    lines = [
        "link set lo up",
        f"addr add {CLIENT_ADDRESS}/{DATA_NET.prefixlen} dev {INTERFACE}",
        *(f"addr add {src}/32 dev {INTERFACE}" for src in sources),
        f"link set {INTERFACE} up",
    ]
    if ipv6:
        lines.append(f"addr add {CLIENT_ADDRESS6}/64 dev {INTERFACE} nodad")
        lines += [f"addr add {src}/128 dev {INTERFACE} nodad" for src in sources6]
    if static_neigh:
        lines.append(f"neigh replace {vip} lladdr {mac} dev {INTERFACE} nud permanent")
        if ipv6:
            lines.append(f"neigh replace {VIP6} lladdr {mac} dev {INTERFACE} nud permanent")
    _batch(client_ns, lines, "configuring the client")

    return LabTopology(
        prefix=prefix,
        bridge_ns=bridge_ns,
        bridge=BRIDGE,
        hosts=tuple(hosts),
        client_ns=client_ns,
        client_address=CLIENT_ADDRESS,
        client_sources=sources,
        vip=vip,
        cluster_mac=mac,
        interface=INTERFACE,
        mgmt_interface=MGMT_INTERFACE,
        mgmt_bridge=mgmt_bridge,
        mgmt_gateway=str(gateway),
        mgmt_subnet=str(subnet),
        vip6=VIP6 if ipv6 else None,
        client_sources6=sources6,
    )


def _kill_namespace_processes(namespace: str, grace_s: float = 2.0) -> None:
    """Stop processes still inside one of our namespaces (they would keep it and its veths alive)."""
    proc = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
    pids = [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _proc_start_time(p) is not None and not _is_zombie(p)]
        if pids:
            time.sleep(0.02)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def destroy(prefix: str) -> None:
    """Remove every namespace ``<prefix>-*`` and root link ``<prefix>m*``; safe to call twice."""
    _check_prefix(prefix)
    namespaces = [ns for ns in list_namespaces() if ns.startswith(prefix + "-")]
    for ns in namespaces:
        _kill_namespace_processes(ns)
    link_re = re.compile(rf"^{re.escape(prefix)}(mb|m\d+)$")
    for link in sorted(_root_links(), key=lambda name: name.endswith("mb")):  # ports first, bridge last
        if link_re.match(link):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    for ns in namespaces:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
    leftovers = [ns for ns in list_namespaces() if ns.startswith(prefix + "-")]
    leftovers += [link for link in _root_links() if link_re.match(link)]
    if leftovers:
        raise LabError(f"destroy({prefix!r}) left {leftovers}; check `ip netns pids` for stuck processes")
    with contextlib.suppress(FileNotFoundError):
        _record_path(prefix).unlink()


def remove_stale(owner_tag: str = "cif") -> list[str]:
    """Destroy labs ``<tag><4 hex>`` whose creating process is gone; return the names removed.

    Labs without a record are left alone (we cannot prove they are ours and abandoned); labs whose
    creator still runs (possibly a concurrent test session) are left alone too.
    """
    if not _TAG_RE.match(owner_tag):
        raise LabError(f"owner tag {owner_tag!r} is invalid: use 1-6 lowercase letters, e.g. 'cif'")
    ns_re = re.compile(rf"^({owner_tag}[0-9a-f]{{4}})-(br|cl|h\d+)$")
    link_re = re.compile(rf"^({owner_tag}[0-9a-f]{{4}})(mb|m\d+)$")
    found: dict[str, list[str]] = {}
    for ns in list_namespaces():
        if m := ns_re.match(ns):
            found.setdefault(m.group(1), []).append(ns)
    for link in _root_links():
        if m := link_re.match(link):
            found.setdefault(m.group(1), []).append(link)
    if state_dir().is_dir():
        for rec in state_dir().glob(f"{owner_tag}*.json"):
            if re.match(rf"^{owner_tag}[0-9a-f]{{4}}$", rec.stem):
                found.setdefault(rec.stem, [])
    removed: list[str] = []
    for prefix, names in sorted(found.items()):
        if _owner_alive(prefix) is not False:
            continue
        destroy(prefix)
        removed += names
    return removed


# --------------------------------------------------------------------------- faults


def _port_state(topology: LabTopology, host: LabHost, path: LinkPath, state: int) -> None:
    # Bridge port state 0 = disabled (drops everything, carrier stays up: a silent partition),
    # 3 = forwarding. The host sees no link event, exactly like a cut further along the wire.
    if path in ("data", "all"):
        _run(
            ["bridge", "-n", topology.bridge_ns, "link", "set", "dev", host.bridge_port, "state", str(state)],
            f"setting data port of {host.name}",
        )
    if path in ("mgmt", "all"):
        _run(
            ["bridge", "link", "set", "dev", host.mgmt_link, "state", str(state)],
            f"setting management port of {host.name}",
        )


def _resolve(topology: LabTopology, host: LabHost | str) -> LabHost:
    return topology.host(host) if isinstance(host, str) else host


def link_down(topology: LabTopology, host: LabHost | str, path: LinkPath = "all") -> None:
    """Cut a host: ``"data"`` (clients), ``"mgmt"`` (ZooKeeper/controller only) or ``"all"`` (dead)."""
    _port_state(topology, _resolve(topology, host), path, 0)


def link_up(topology: LabTopology, host: LabHost | str, path: LinkPath = "all") -> None:
    """Restore what :func:`link_down` cut."""
    _port_state(topology, _resolve(topology, host), path, 3)

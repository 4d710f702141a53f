"""Count the connections a draining host still tracks, per bucket, from conntrack's text listing.

A drain ends when the old owner tracks no more connections of the bucket (docs/drain.md). The hook
reads its conntrack table (``/proc/net/nf_conntrack`` or ``conntrack -L -o extended``: the same line
format) and counts, per bucket, the entries addressed to the VIP's service; the bucket of an entry is
computed from its *original* source address with the kernel-exact hash the backend uses
(controller.core.hashing), so the count matches what the kernel rules let through.

The text comes from the kernel (or a tool) but is parsed as untrusted input anyway: bounded line
length and count, every token checked, and any malformed line is one :class:`ConntrackError` naming
the line and the problem. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controller.core.errors import ClusterIPFailoverError
from controller.core.hashing import bucket_for
from controller.core.model import ClusterSpec, IPAddress

#: A conntrack line is ~250 characters; anything far longer is not one.
MAX_LINE = 2048
#: Upper bound of entries read (nf_conntrack_max is 262144 by default on 8+ GiB hosts).
MAX_ENTRIES = 4_000_000
#: TCP states of a connection that is over: its entry only waits out a timer, no session remains.
CLOSED_TCP_STATES = frozenset({"TIME_WAIT", "CLOSE"})
_STATE = re.compile(r"^[A-Z][A-Z_0-9]{1,15}$")
_FLAG = re.compile(r"^\[[A-Z_]{1,20}\]$")
_KEY_VALUE = re.compile(r"^([a-z][a-z0-9_-]{0,15})=(\S{1,200})$")
#: Protocols whose conntrack line carries a state word after the timeout.
_STATEFUL = frozenset({"tcp", "sctp", "dccp"})


class ConntrackError(ClusterIPFailoverError):
    """The conntrack listing could not be read or parsed."""


@dataclass(frozen=True)
class Entry:
    """The original direction of one tracked connection."""

    protocol: str
    state: str | None
    src: IPAddress
    dst: IPAddress
    sport: int | None
    dport: int | None


def _number(token: str, what: str, line_no: int, hi: int) -> int:
    if not token.isdigit() or len(token) > 10 or int(token) > hi:
        raise ConntrackError(f"conntrack line {line_no}: {what} {token[:20]!r} is not a number 0..{hi}")
    return int(token)


def parse_line(line: str, line_no: int = 1) -> Entry:
    """One listing line -> :class:`Entry` (original direction); ConntrackError if malformed."""
    if len(line) > MAX_LINE:
        raise ConntrackError(f"conntrack line {line_no}: {len(line)} characters, more than {MAX_LINE}")
    tokens = line.split()
    if tokens and tokens[0] in ("ipv4", "ipv6"):  # /proc/net/nf_conntrack and `-o extended`
        if len(tokens) < 2:
            raise ConntrackError(f"conntrack line {line_no}: truncated after {tokens[0]!r}")
        _number(tokens[1], "layer-3 protocol number", line_no, 255)
        tokens = tokens[2:]
    if len(tokens) < 3:
        raise ConntrackError(f"conntrack line {line_no}: too short to be a conntrack entry")
    protocol = tokens[0]
    if not protocol.isalnum() or len(protocol) > 16:
        raise ConntrackError(f"conntrack line {line_no}: protocol {protocol[:20]!r} is not a protocol name")
    _number(tokens[1], "protocol number", line_no, 255)
    _number(tokens[2], "timeout", line_no, 2**32 - 1)
    rest = tokens[3:]
    state = None
    if protocol in _STATEFUL:
        if not rest or not _STATE.match(rest[0]):
            raise ConntrackError(f"conntrack line {line_no}: {protocol} entry without a state word")
        state, rest = rest[0], rest[1:]
    fields: dict[str, str] = {}
    for token in rest:
        if _FLAG.match(token):
            continue
        match = _KEY_VALUE.match(token)
        if match is None:
            raise ConntrackError(f"conntrack line {line_no}: unexpected token {token[:40]!r}")
        fields.setdefault(match.group(1), match.group(2))  # the first occurrence is the original direction
    if "src" not in fields or "dst" not in fields:
        raise ConntrackError(f"conntrack line {line_no}: no src=/dst= addresses")
    try:
        src = ipaddress.ip_address(fields["src"])
        dst = ipaddress.ip_address(fields["dst"])
    except ValueError:
        raise ConntrackError(f"conntrack line {line_no}: src/dst is not an IP address") from None
    sport = _number(fields["sport"], "sport", line_no, 65535) if "sport" in fields else None
    dport = _number(fields["dport"], "dport", line_no, 65535) if "dport" in fields else None
    return Entry(protocol, state, src, dst, sport, dport)


def parse(text: str) -> list[Entry]:
    """Every entry of a listing (empty lines skipped); ConntrackError on the first bad line."""
    entries: list[Entry] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(entries) >= MAX_ENTRIES:
            raise ConntrackError(f"conntrack listing has more than {MAX_ENTRIES} entries: not counting")
        entries.append(parse_line(line, line_no))
    return entries


def is_session(entry: Entry, spec: ClusterSpec) -> bool:
    """Is this entry a live TCP connection to the cluster's service?

    TCP only, like the drain rules: a draining host keeps no UDP flows (the new owner could not tell
    them from new ones and both would answer), so UDP entries must not hold a drain open.
    """
    if entry.dst != spec.vip or entry.protocol != "tcp" or spec.protocol == "udp":
        return False
    if spec.ports and entry.dport not in spec.ports:
        return False
    return entry.state not in CLOSED_TCP_STATES


def count_sessions(entries: Iterable[Entry], spec: ClusterSpec, buckets: Iterable[int]) -> Mapping[int, int]:
    """Live TCP connections to the service per bucket in ``buckets`` (every one of them present, 0 if none)."""
    counts = {b: 0 for b in buckets}
    if not counts:
        return counts
    for entry in entries:
        if not is_session(entry, spec):
            continue
        bucket = bucket_for(spec.backend, entry.src, spec.buckets, spec.hash, entry.sport, entry.dport)
        if bucket in counts:
            counts[bucket] += 1
    return counts

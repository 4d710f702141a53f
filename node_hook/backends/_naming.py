"""Kernel object names (nft tables, iptables chains) derived from the cluster name.

Why derived and not configured: a restarted hook must find what its predecessor installed without
any state of its own, so the name is a pure function of the cluster name (and an optional prefix
that lets tests or a second controller deployment keep their objects apart). Characters the kernel
tools would choke on are replaced, and a short hash keeps two different cluster names that
sanitise to the same text (``a.b`` and ``a_b``) apart.
"""

from __future__ import annotations

import hashlib
import re

#: nft table names are identifiers; keep to a conservative alphabet.
_NFT_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
#: iptables chain names: at most 28 characters (XT_EXTENSION_MAXNAMELEN - 1), no whitespace.
IPT_CHAIN_MAX = 28
NFT_TABLE_MAX = 64
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")


def check_prefix(prefix: str) -> str:
    """The prefix if it is usable in every kernel name, else ValueError naming the fix."""
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"name prefix {prefix!r} is invalid: use 1-8 lowercase letters/digits starting with a letter")
    return prefix


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def nft_table_name(cluster: str, prefix: str = "cif") -> str:
    """``cif_<cluster>``, sanitised; also used for the ``arp`` table of the same cluster."""
    safe = _NFT_UNSAFE.sub("_", cluster)
    name = f"{check_prefix(prefix)}_{safe}"
    if safe != cluster or len(name) > NFT_TABLE_MAX:
        name = f"{name[: NFT_TABLE_MAX - 7]}_{_short_hash(cluster)}"
    return name


def ipt_chain_name(cluster: str, prefix: str = "cif") -> str:
    """``CIF-<cluster>`` (upper-case prefix, like iptables' own chains), shortened with a hash if long."""
    name = f"{check_prefix(prefix).upper()}-{cluster}"
    if len(name) > IPT_CHAIN_MAX:
        name = f"{name[: IPT_CHAIN_MAX - 7]}~{_short_hash(cluster)}"
    return name

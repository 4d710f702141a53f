"""python-iptables rule builders shared by the xt_cluster and clusterip backends.

Both backends keep their rules in one chain of their own (``CIF-<cluster>``) reached by a single
jump from a built-in chain, so that install/adopt/remove touch nothing else of the host's firewall,
and they apply the same policy to non-service VIP traffic (see node_hook.backends._service).
"""

from __future__ import annotations

from typing import Any

from controller.core.errors import BackendError
from node_hook.backends._service import IPT_ICMP4_ERRORS, Service
from node_hook.backends._xtables import add_comment, import_iptc

#: multiport takes at most 15 ports (XT_MULTI_PORTS).
MAX_PORTS = 15


def ports_problem(service: Service) -> str | None:
    if len(service.ports) > MAX_PORTS:
        return f"{len(service.ports)} ports configured but iptables multiport takes at most {MAX_PORTS}: use nftables"
    return None


def add_service_matches(rule: Any, service: Service) -> None:
    """``-p PROTO [-m tcp --dport P | -m multiport --dports P,Q]`` (nothing for protocol all)."""
    if service.everything:
        return
    rule.protocol = service.protocol
    if len(service.ports) == 1:
        match = rule.create_match(service.protocol)
        match.dport = str(service.ports[0])
    elif service.ports:
        if len(service.ports) > MAX_PORTS:
            raise BackendError(ports_problem(service) or "too many ports")
        match = rule.create_match("multiport")
        match.dports = ",".join(str(p) for p in service.ports)


def new_rule(comment: str, target: str, interface: str | None = None, vip: str | None = None) -> Any:
    iptc = import_iptc()
    rule = iptc.Rule()
    if interface:
        rule.in_interface = interface
    if vip:
        rule.dst = f"{vip}/32"
    add_comment(rule, comment)
    rule.target = iptc.Target(rule, target)
    return rule


def guard_rules(service: Service, comment: str) -> list[Any]:
    """After the balancing decision: ICMP errors pass (RETURN), everything else to the VIP drops.

    For protocol ``all`` the balancing rule already decided every packet, so only the DROP remains.
    """
    rules = []
    if not service.everything:
        for index, icmp_type in enumerate(IPT_ICMP4_ERRORS):
            rule = new_rule(f"{comment}:icmp{index}", "RETURN")
            rule.protocol = "icmp"
            match = rule.create_match("icmp")
            match.icmp_type = icmp_type
            rules.append(rule)
    rules.append(new_rule(f"{comment}:drop", "DROP"))
    return rules


def chain_comments(table: Any, chain: str) -> list[str] | None:
    """Comments of the rules in ``chain`` (None if the chain does not exist)."""
    from node_hook.backends._xtables import rule_comment

    iptc = import_iptc()
    if not table.is_chain(chain):
        return None
    return [rule_comment(r) for r in iptc.Chain(table, chain).rules]


def jump_rules(table: Any, builtin: str, chain: str) -> list[Any]:
    """Rules of ``builtin`` that jump to ``chain``."""
    iptc = import_iptc()
    return [r for r in iptc.Chain(table, builtin).rules if r.target is not None and r.target.name == chain]


def drop_chain(table: Any, builtin: str, chain: str) -> None:
    """Delete the jumps to ``chain`` from ``builtin`` and the chain itself (inside a change_table edit)."""
    iptc = import_iptc()
    parent = iptc.Chain(table, builtin)
    for rule in jump_rules(table, builtin, chain):
        parent.delete_rule(rule)
    if table.is_chain(chain):
        own = iptc.Chain(table, chain)
        own.flush()
        own.delete()

"""``clusterip-ctl import iptables-save``: build a starting config from the hosts' current rules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import click

from controller.core.errors import ClusterIPFailoverError, UsageError
from controller.core.iptables_import import import_iptables_save


class HostsDisagree(ClusterIPFailoverError):
    """The hosts' rules contradict each other; no config is written (exit 3)."""

    exit_code: ClassVar[int] = 3


def _read_dumps(files: tuple[str, ...], host_ids: tuple[str, ...]) -> list[tuple[str, str]]:
    if not files:
        if len(host_ids) != 1:
            raise UsageError("reading iptables-save from stdin: name the host with one --host-id ID")
        return [(host_ids[0], sys.stdin.read())]
    if host_ids and len(host_ids) != len(files):
        raise UsageError(f"{len(host_ids)} --host-id for {len(files)} files: give one per file, in order, or none "
                         "(the file name without its extension is the host id)")
    dumps = []
    for index, name in enumerate(files):
        try:
            text = Path(name).read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise UsageError(f"cannot read {name}: {err.strerror or err}; check the path") from None
        dumps.append((host_ids[index] if host_ids else Path(name).stem, text))
    return dumps


@click.group("import")
def import_group() -> None:
    """Import an existing setup into a configuration."""


@import_group.command("iptables-save")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--host-id", "host_ids", multiple=True, metavar="ID",
              help="Host id per FILE, in order (default: file name without extension); required for stdin.")
@click.option("--interface", metavar="IFACE", help="Interface carrying the VIP (when the rules have no -i).")
@click.option("--cluster-mac", "mac", metavar="MAC",
              help="Cluster multicast MAC (xt_cluster rules do not contain it).")
@click.option("--name", metavar="NAME", help="Cluster name (default: vip-<address>); only with one VIP.")
@click.option("-o", "--output", metavar="FILE", help="Write the config to FILE instead of stdout.")
@click.option("--force", is_flag=True, help="Overwrite FILE given with -o.")
def iptables_save(
    files: tuple[str, ...], host_ids: tuple[str, ...], interface: str | None, mac: str | None,
    name: str | None, output: str | None, force: bool,
) -> None:
    """Read each host's iptables-save output (one FILE per host, or stdin) and write a starting config.

    Findings go to stderr. Exit 0 when the hosts agree (warnings, e.g. placeholders to fill in, may
    remain), 3 when they disagree (no config is written), 2 on bad usage.
    """
    if output is not None and Path(output).exists() and not force:
        raise UsageError(f"{output} exists: pass --force to overwrite it, or choose another -o FILE")
    result = import_iptables_save(_read_dumps(files, host_ids), interface=interface, name=name, mac=mac)
    for finding in result.findings:
        click.echo(str(finding), err=True)
    if not result.ok or result.config_text is None:
        errors = sum(f.severity == "error" for f in result.findings)
        raise HostsDisagree(f"{errors} problem{'s' if errors != 1 else ''} above: no config written; "
                            "fix the rules on the hosts (or leave a host out) and import again")
    if output is None:
        click.echo(result.config_text, nl=False)
        return
    try:
        Path(output).write_text(result.config_text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot write {output}: {err.strerror or err}; choose another -o FILE") from None
    click.echo(f"wrote {output}; review it, then run: clusterip-ctl config check {output}", err=True)

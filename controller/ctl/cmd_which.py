"""``clusterip-ctl which ADDRESS``: the bucket (and home host) a client address lands in.

The hash itself is controller.core.hashing (kernel-exact); this module only turns command-line
arguments or a config file into its inputs and explains bad combinations in one line.
"""

from __future__ import annotations

import ipaddress
import json

import click

from controller.core.errors import UsageError
from controller.core.model import BACKENDS, HASH_MODES, MAX_BUCKETS, Backend, ClusterSpec, HashSettings, IPAddress
from controller.ctl.configfile import load_config


def _address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise UsageError(f"ADDRESS {text!r} is not an IPv4 or IPv6 address; pass the client's address, "
                         "e.g. 192.0.2.7") from None


def _u32(text: str, option: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a number; write e.g. 0xdeadbeef or 3735928559") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise UsageError(f"{option} {text} does not fit in 32 bits; use 0..0xffffffff")
    return value


def _from_config(
    config_file: str, cluster_name: str | None, flags: dict[str, object]
) -> tuple[ClusterSpec, Backend, int, HashSettings]:
    given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
    if given:
        raise UsageError(f"{', '.join(given)} come{'s' if len(given) == 1 else ''} from the config with --config; "
                         "drop them (or use --backend without --config)")
    try:
        cluster = load_config(config_file).cluster(cluster_name)
    except KeyError as err:
        raise UsageError(str(err.args[0])) from None
    return cluster, cluster.backend, cluster.buckets, cluster.hash


def _from_flags(
    backend: Backend, buckets: int | None, seed: str | None, hash_init: str | None, hash_mode: str | None
) -> tuple[int, HashSettings]:
    if buckets is None:
        raise UsageError("--buckets N is required with --backend (the bucket total of the rules)")
    limit = MAX_BUCKETS[backend]
    lowest = 2 if backend == "nftables" else 1
    if not lowest <= buckets <= limit:
        raise UsageError(f"--buckets {buckets} is out of range for {backend}; use {lowest}..{limit}")
    defaults = HashSettings()
    if backend == "clusterip":
        if seed is not None:
            raise UsageError("clusterip does not use --seed; give --hash-init (and --hash-mode) instead")
        mode = hash_mode or defaults.mode
        init = _u32(hash_init, "--hash-init") if hash_init is not None else defaults.hash_init
        return buckets, HashSettings(mode=mode, hash_init=init)  # type: ignore[arg-type]
    if hash_init is not None or hash_mode is not None:
        raise UsageError(f"{backend} hashes the source address with --seed only; drop --hash-init/--hash-mode")
    if seed is None:
        raise UsageError(f"--seed S is required with {backend} (the rule's hash seed, e.g. 0xdeadbeef)")
    return buckets, HashSettings(seed=_u32(seed, "--seed"))


def _check_ports(backend: Backend, settings: HashSettings, sport: int | None, dport: int | None) -> None:
    needs_sport = backend == "clusterip" and settings.mode != "sourceip"
    needs_dport = backend == "clusterip" and settings.mode == "sourceip-sourceport-destport"
    what = f"clusterip hash mode {settings.mode}" if backend == "clusterip" else backend
    if needs_sport and sport is None:
        raise UsageError(f"{what} hashes the source port: pass --sport P")
    if needs_dport and dport is None:
        raise UsageError(f"{what} hashes the destination port: pass --dport P")
    if sport is not None and not needs_sport:
        raise UsageError(f"{what} does not hash the source port: drop --sport")
    if dport is not None and not needs_dport:
        raise UsageError(f"{what} does not hash the destination port: drop --dport")


@click.command("which")
@click.argument("address")
@click.option("--sport", type=click.IntRange(0, 65535), help="Client source port (hash modes that use it).")
@click.option("--dport", type=click.IntRange(0, 65535), help="Destination port (sourceip-sourceport-destport).")
@click.option("--config", "config_file", metavar="FILE", help="Take backend, buckets and hash from FILE.")
@click.option("--cluster", "cluster_name", metavar="NAME", help="Cluster in FILE (when it has several).")
@click.option("--backend", type=click.Choice(BACKENDS), help="Backend, instead of --config.")
@click.option("--buckets", type=int, help="Bucket total (with --backend).")
@click.option("--seed", metavar="S", help="xt_cluster / nftables hash seed (with --backend).")
@click.option("--hash-init", metavar="H", help="CLUSTERIP --hash-init (with --backend clusterip; default 0).")
@click.option("--hash-mode", type=click.Choice(HASH_MODES), help="CLUSTERIP --hashmode (default sourceip).")
@click.option("--owner", "with_owner", is_flag=True,
              help="Also read the bucket's current owner from ZooKeeper (needs --config).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def which(
    address: str, sport: int | None, dport: int | None, config_file: str | None, cluster_name: str | None,
    backend: Backend | None, buckets: int | None, seed: str | None, hash_init: str | None,
    hash_mode: str | None, with_owner: bool, as_json: bool,
) -> None:
    """Print the bucket a client ADDRESS lands in (and its home host; with --owner, its owner now).

    Exit 0 on success, 2 on bad arguments or an invalid --config file, 1 when --owner cannot read
    ZooKeeper.
    """
    if with_owner and config_file is None:
        raise UsageError("--owner reads the bucket map of a configured cluster: add --config FILE")
    if (config_file is None) == (backend is None):
        raise UsageError("give exactly one of --config FILE or --backend {clusterip,xt_cluster,nftables}")
    if cluster_name is not None and config_file is None:
        raise UsageError("--cluster needs --config FILE")
    addr = _address(address)
    cluster: ClusterSpec | None = None
    if config_file is not None:
        flags: dict[str, object] = {"buckets": buckets, "seed": seed, "hash_init": hash_init, "hash_mode": hash_mode}
        cluster, chosen, total, settings = _from_config(config_file, cluster_name, flags)
    else:
        assert backend is not None
        chosen = backend
        total, settings = _from_flags(backend, buckets, seed, hash_init, hash_mode)
    if chosen == "clusterip" and addr.version == 6:
        raise UsageError(f"CLUSTERIP is IPv4 only and {addr} is IPv6; such clients cannot reach a clusterip VIP")
    _check_ports(chosen, settings, sport, dport)
    from controller.core.hashing import bucket_for  # lazy: keeps the CLI usable if hashing is being changed

    try:
        bucket = bucket_for(chosen, addr, total, settings, sport=sport, dport=dport)
    except ValueError as err:
        raise UsageError(str(err)) from None
    home = cluster.home_of(bucket) if cluster is not None else None
    live: tuple[str | None, str] | None = None
    if with_owner and cluster is not None and config_file is not None:
        live = _current_owner(config_file, cluster, bucket)
    if as_json:
        doc: dict[str, object] = {
            "address": str(addr), "bucket": bucket, "backend": chosen, "buckets": total,
            "hash": ({"mode": settings.mode, "hash_init": settings.hash_init} if chosen == "clusterip"
                     else {"seed": settings.seed}),
            "sport": sport, "dport": dport,
            "cluster": cluster.name if cluster else None, "home": home,
        }
        if live is not None:
            doc["owner"], doc["state"] = live
        click.echo(json.dumps(doc, sort_keys=True))
        return
    how = (
        f"{settings.mode} hash_init {settings.hash_init}" if chosen == "clusterip" else f"seed {settings.seed:#010x}"
    )
    where = f"cluster {cluster.name}, " if cluster else ""
    line = f"{addr}: bucket {bucket} of {total} ({where}{chosen}, {how})"
    if cluster is not None:
        line += f"; home host {home}" if home else "; no home host"
    if live is not None:
        owner, state = live
        line += f"; owner {owner} ({state})" if owner else f"; no owner ({state})"
    click.echo(line)


def _current_owner(config_file: str, cluster: ClusterSpec, bucket: int) -> tuple[str | None, str]:
    """(owner, state) of ``bucket`` in the live map; ZooKeeper is imported only for --owner."""
    from controller.core.status_view import bucket_state
    from controller.ctl import zkview

    config = zkview.load(config_file)
    with zkview.connected(config, read_only=True) as client:
        _, view, _ = zkview.read_cluster(client, cluster)
    if bucket not in view.map.buckets:
        return None, "unowned"
    return view.map.owner_of(bucket), bucket_state(view, bucket)

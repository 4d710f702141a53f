"""Helper run inside one host namespace: answer each newline on stdin with the kernel's owned set.

Why a long-lived helper per namespace rather than ``ip netns exec nft list`` per sample: a fork and
exec of nft costs tens of milliseconds on a loaded machine, and the checker needs every host read
at least ten times a second. libnftables in-process answers in about a millisecond.

Usage: ``ip netns exec NS python owned_reader.py TABLE [FAMILY]``; each request line is a sequence
number, each reply one JSON line ``{"seq": ..., "t": <CLOCK_MONOTONIC>, "owned": [buckets]}`` (an
absent table or set is ``[]``), or ``{"seq": ..., "t": ..., "error": "..."}``.

With a dead-man switch (``set alive``, node_hook/backends/_deadman_nft.py) the kernel accepts
nothing once the alive element has expired, whatever ``owned`` says: the reply then lists no bucket
(and ``"alive": false``), because ownership means "this kernel would answer the bucket's clients".
The two sets are read one after the other (about a millisecond apart), like the hosts of a round.
"""

from __future__ import annotations

import json
import sys
import time


def _owned(ctx: object, family: str, table: str) -> list[int]:
    rc, out, _ = ctx.cmd(f"list set {family} {table} owned")  # type: ignore[attr-defined]
    if rc != 0:
        return []  # no table (host rebooted, hook not started yet): owns nothing
    for item in json.loads(out).get("nftables", []):
        if "set" in item:
            return sorted(int(e) for e in item["set"].get("elem", []) if isinstance(e, int))
    return []


def _alive(ctx: object, family: str, table: str) -> bool:
    """False only when the table has an alive set and it is empty (expired): no dead-man switch is alive."""
    rc, out, _ = ctx.cmd(f"list set {family} {table} alive")  # type: ignore[attr-defined]
    if rc != 0:
        return True
    for item in json.loads(out).get("nftables", []):
        if "set" in item:
            return bool(item["set"].get("elem"))
    return True


def main() -> None:
    import nftables

    table = sys.argv[1]
    family = sys.argv[2] if len(sys.argv) > 2 else "ip"
    ctx = nftables.Nftables()
    ctx.set_json_output(True)
    for request in sys.stdin:
        now = time.monotonic()
        seq = request.strip()[:20]  # echoed, so a checker that gave up on a late reply can skip it
        try:
            owned = _owned(ctx, family, table)
            alive = _alive(ctx, family, table)
            reply: dict[str, object] = {"seq": seq, "t": now, "owned": owned if alive else [], "alive": alive}
        except Exception as exc:  # report, keep serving: the checker counts errors
            reply = {"seq": seq, "t": now, "error": f"{type(exc).__name__}: {exc}"[:200]}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

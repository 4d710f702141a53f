"""End-to-end failover on the real kernel, judged from the clients' side (issue 7).

One lab for the module: 4 hosts (nftables backend) with real sshd, hooks in their namespaces, a
3-server ZooKeeper ensemble on the management network, two controller replicas, 64 client sources.
Each test injects one fault, then asserts what clients see: which sources get an SSH answer and
from which host, that no source gets two answers (UDP responders reply from every host that accepts
a packet), and that established SSH sessions of unaffected buckets survive. Every test restores the
lab to all-home before the next one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from clusterlab import netns
from clusterlab.measure import BannerWatch, recovery, summary, wait_for
from clusterlab.stack import LabStack, StackOptions
from clusterlab.traffic import udp_probe

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stack() -> Iterator[LabStack]:
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root (CAP_NET_ADMIN)")
    lab = LabStack(StackOptions(ensemble=True, client_sources=64, failback="delayed", hold_down_s=2.0))
    lab.up(timeout_s=90)
    try:
        yield lab
    finally:
        lab.down()


def homes(stack: LabStack) -> dict[str, list[int]]:
    return {h: stack.home_buckets(h) for h in stack.host_names}


@pytest.fixture(autouse=True)
def all_home(stack: LabStack) -> Iterator[None]:
    stack.wait_converged(60, expect=homes(stack))
    yield
    stack.wait_converged(90, expect=homes(stack))


def assert_clients_served(
    stack: LabStack, down: set[str] = frozenset(), owners: dict[int, str | None] | None = None  # type: ignore[assignment]
) -> dict[int, str | None]:
    """Every source answered by exactly the host the map and the kernel-exact hash predict, once.

    ``owners`` defaults to the map read now; pass the map from before when ZooKeeper is down.
    """
    owners = stack.owners() if owners is None else owners
    banners = stack.banners()
    for _ in range(3):  # a source without any answer may only have met a slow banner: ask it again
        silent = [s for s, h in banners.items() if h is None]
        if not silent:
            break
        banners.update(stack.banners(silent, timeout_s=3.0))
    wrong = {s: (h, stack.expected_host(s, owners)) for s, h in banners.items() if h != stack.expected_host(s, owners)}
    assert not wrong, f"sources answered by an unexpected host (got, expected): {list(wrong.items())[:5]}"
    assert not set(banners.values()) & down, "a failed host still answers"
    replies = udp_probe(stack.topo, stack.options.responder_port, window_s=0.5)
    dup = {s: r for s, r in replies.items() if len(r) > 1}
    none = [s for s, r in replies.items() if not r]
    assert not dup, f"duplicate answers: {list(dup.items())[:5]}"
    assert not none, f"unanswered UDP sources: {none[:5]}"
    print(f"clients: {len(banners)} sources answered once each by the predicted host")
    return owners


class Sessions:
    """Long-lived interactive SSH sessions from a sample of sources (through the VIP)."""

    def __init__(self, stack: LabStack, sources: list[str]) -> None:
        self.proc = stack.popen_client(
            "clusterlab.sshclient",
            "sessions",
            "--vip",
            stack.topo.vip,
            "--sources",
            ",".join(sources),
            "--key",
            str(stack.user_key),
            "--interval",
            "0.05",
            "--timeout",
            "10",
            "--stall",
            "5",
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"sessions did not start: {self.proc.stderr.read() if self.proc.stderr else ''}"
        self.hosts: dict[str, str | None] = json.loads(line)["ready"]

    def stop(self) -> dict[str, dict[str, object]]:
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err[-400:]
        result: dict[str, dict[str, object]] = json.loads(out.strip().splitlines()[-1])
        return result


def sample_sessions(stack: LabStack, per_host: int = 2) -> Sessions:
    owners = stack.owners()
    chosen: dict[str, list[str]] = {}
    for src in stack.topo.client_sources:
        host = owners.get(stack.bucket_of(src))
        if host and len(chosen.setdefault(host, [])) < per_host:
            chosen[host].append(src)
    sessions = Sessions(stack, [s for srcs in chosen.values() for s in srcs])
    assert all(sessions.hosts.values()), f"sessions failed to open: {sessions.hosts}"
    return sessions


def assert_unaffected_sessions_survived(report: dict[str, dict[str, object]], victims: set[str]) -> None:
    broken = {s: r for s, r in report.items() if r["host"] not in victims and r["broken"]}
    assert not broken, f"sessions of unaffected buckets broke: {broken}"
    kept = [s for s, r in report.items() if r["host"] not in victims]
    assert kept and all(int(report[s]["sent"]) > 5 for s in kept), report  # type: ignore[call-overload]
    print(f"sessions: {len(kept)} unaffected sessions survived")


def measure_failover(stack: LabStack, victim: str, inject: object, bound_s: float) -> list[float]:
    """Inject a fault, and return per-source takeover times seen by clients.

    ``bound_s`` is a sanity limit that only a broken failover exceeds, even on a loaded CI machine;
    the timing targets themselves are proven by deploy/lab/bench_failover.py, which prints numbers.
    """
    owners = stack.owners()
    affected = [s for s in stack.topo.client_sources if owners.get(stack.bucket_of(s)) == victim]
    assert affected
    with BannerWatch(stack, affected, interval_s=0.02, timeout_s=1.0, duration_s=60) as watch:
        time.sleep(0.3)
        fault_at = time.time()
        inject()  # type: ignore[operator]
        stack.wait_taken_over(victim, affected, timeout_s=30)
        time.sleep(1.5)  # let attempts started after the move complete (banners are slow under load)
        transitions = watch.stop()
    results = recovery(transitions, fault_at, bad_hosts=[victim])
    times = [r.recovered_s for r in results if r.recovered_s is not None]
    if len(times) != len(results):
        now = stack.owners()
        lost = {r.source: (stack.bucket_of(r.source), now.get(stack.bucket_of(r.source)),
                           [(round(t - fault_at, 2), st) for t, st in transitions.get(r.source, [])][-6:])
                for r in results if r.recovered_s is None}
        raise AssertionError(f"sources never recovered (bucket, owner now, last transitions): {lost}")
    stats = summary(times)
    print(f"failover of {victim}: {len(affected)} sources, takeover p50 {stats['p50']:.3f} s max {stats['max']:.3f} s")
    assert stats["max"] <= bound_s, f"takeover took {stats['max']:.2f} s (bound {bound_s} s)"
    return times


# --------------------------------------------------------------------------- tests


def test_steady_state_every_source_served_once(stack: LabStack) -> None:
    assert_clients_served(stack)
    logins = stack.logins(list(stack.topo.client_sources[:8]))
    owners = stack.owners()
    assert all(logins[s] == stack.expected_host(s, owners) for s in logins), logins


def test_host_crash(stack: LabStack) -> None:
    sessions = sample_sessions(stack)
    try:
        measure_failover(stack, "h2", lambda: stack.crash_host("h2"), bound_s=15.0)
        assert_clients_served(stack, down={"h2"})
        assert_unaffected_sessions_survived(sessions.stop(), {"h2"})
    finally:
        stack.restore_host("h2")


def test_sshd_hung(stack: LabStack) -> None:
    sessions = sample_sessions(stack)
    try:
        measure_failover(stack, "h3", lambda: stack.hang_sshd("h3"), bound_s=15.0)
        assert_clients_served(stack, down={"h3"})
        assert_unaffected_sessions_survived(sessions.stop(), {"h3"})
    finally:
        stack.resume_sshd("h3")


def test_login_impossible(stack: LabStack) -> None:
    try:
        measure_failover(stack, "h4", lambda: stack.exhaust_logins("h4"), bound_s=20.0)
        assert_clients_served(stack, down={"h4"})
    finally:
        stack.restore_logins("h4")


def test_hook_crash_alerts_and_survivors_serve_until_it_returns(stack: LabStack) -> None:
    """A hook crash on a healthy host (issue 7 asked "nothing moves, alert visible" before the dead-man
    switch existed, when the kernel kept serving). Now the host's kernel stops answering E = 0.6 T
    after the hook's last refresh (docs/failure-modes.md), before its session can expire, and the
    hook's status says so (``deadman_s``): once the session is gone the controller moves its buckets
    to survivors at once although the host is probed up, alerts, and fails them back when the
    restarted hook has registered and applied the map. Sessions of the other hosts never notice.

    Not tested here: "the hook is back before its session expired, nothing moves". A restarted hook
    cannot register while its old registration lives (duplicate-host protection), so it always
    passes through an absence that the controller (woken by the member watch) nearly always sees
    first; a restart faster than T does not help. See docs/failure-modes.md.
    """
    before = stack.owners()
    sessions = sample_sessions(stack)
    own = [s for s in stack.topo.client_sources if before.get(stack.bucket_of(s)) == "h1"]
    killed: list[float] = []
    restarted = False
    try:
        times = measure_failover(stack, "h1", lambda: (killed.append(time.time()), stack.kill_hook("h1")),
                                 bound_s=15.0)
        leader = stack.leader()
        assert leader is not None
        log = stack.log_tail(f"controller-{leader}", 400)
        assert "hook of h1 is not running" in log, "the leader did not alert about h1's hook"
        out = stack.ctl("history", "--config", str(stack.config_path), "--json")
        grants = [e for e in json.loads(out.stdout)["events"] if e["event"] == "grant" and e["time"] >= killed[0]
                  and before.get(e["bucket"]) == "h1"]
        assert {e["bucket"] for e in grants} == {b for b, o in before.items() if o == "h1"}, grants
        assert all("dead-man switch" in e["reason"] for e in grants), [e["reason"] for e in grants]
        # The grants were decided after h1's session was gone: its last heartbeat (every T/20) came
        # before the kill, so the session can expire T - T/20 after it at the earliest.
        moved_after = min(e["time"] for e in grants) - killed[0]
        assert moved_after >= 0.9 * stack.session_timeout_s, moved_after
        print(f"hook crash: h1's clients answered by survivors after p50 {sorted(times)[len(times) // 2]:.2f} s, "
              f"max {max(times):.2f} s")
        moved = stack.owners()
        assert not any(o == "h1" for o in moved.values()), moved
        assert all(moved[b] == o for b, o in before.items() if o != "h1"), "other hosts' buckets moved"
        # Survivors answer every source once; h1's kernel (its hook dead) answers nobody.
        assert_clients_served(stack, down={"h1"})
        stack.start_hook("h1")
        restarted = True
    finally:
        if not restarted:
            stack.start_hook("h1")
    stack.wait_converged(60, expect=homes(stack))
    assert stack.owners() == before
    wait_for(lambda: all(h == "h1" for h in stack.banners(own[:8], timeout_s=1.0).values()), timeout_s=30,
             what="h1's clients to be served by h1 again")
    assert_clients_served(stack)
    report = sessions.stop()
    assert_unaffected_sessions_survived(report, {"h1"})
    h1 = {s: r for s, r in report.items() if r["host"] == "h1"}
    print(f"hook crash: grants decided {moved_after:.2f} s after the kill; h1's own sessions "
          f"{sum(1 for r in h1.values() if not r['broken'])}/{len(h1)} survived (moved buckets are reset)")


def test_controller_leader_killed_no_client_impact(stack: LabStack) -> None:
    before = stack.owners()
    sessions = sample_sessions(stack)
    old = stack.kill_controller()
    try:
        new = wait_for(lambda: (lambda ld: ld if ld and ld != old else None)(stack.leader()), 10, what="a new leader")
        print(f"leader {old} killed; {new} leads")
        time.sleep(1.0)
        assert stack.owners() == before
        assert_clients_served(stack)
        assert_unaffected_sessions_survived(sessions.stop(), set())
    finally:
        stack.start_controller(old)


def test_zookeeper_leader_killed(stack: LabStack) -> None:
    assert stack.zk is not None
    before = stack.owners()
    victim = stack.zk.leader()
    victim.kill()
    try:
        time.sleep(2.0)
        assert stack.owners() == before
        assert_clients_served(stack)
    finally:
        stack.zk.restart_server(victim, timeout_s=60)


def test_zookeeper_fully_down_nothing_dropped(stack: LabStack) -> None:
    sessions = sample_sessions(stack)
    before = stack.owners()
    stack.zk_stop_all()
    try:
        time.sleep(3 * stack.session_timeout_s)
        assert_clients_served(stack, owners=before)  # the kernel rules stayed: clients never noticed
    finally:
        stack.zk_start_all()
    stack.wait_converged(60, expect=homes(stack))
    assert_unaffected_sessions_survived(sessions.stop(), set())


def test_isolated_host_never_double_owns(stack: LabStack) -> None:
    """h4 loses ZooKeeper, the controllers and its peers; clients still reach it."""
    victim = "h4"
    owners = stack.owners()
    affected = [s for s in stack.topo.client_sources if owners.get(stack.bucket_of(s)) == victim]
    stack.isolate_host(victim)
    try:
        watch_isolation(stack, victim, affected)
    finally:
        stack.unisolate_host(victim)


def watch_isolation(stack: LabStack, victim: str, affected: list[str]) -> None:
    deadline = time.monotonic() + 15
    samples = 0
    while time.monotonic() < deadline:
        replies = udp_probe(stack.topo, stack.options.responder_port, sources=affected, window_s=0.3)
        samples += 1
        dup = {s: r for s, r in replies.items() if len(r) > 1}
        assert not dup, f"double ownership while {victim} is isolated: {dup}"
        if all(r and r[0] != victim for r in replies.values()):
            break
    else:
        pytest.fail(f"{victim}'s buckets were not taken over within 15 s")
    print(f"isolation: {samples} UDP sweeps, no duplicate answer; survivors took over")
    assert_clients_served(stack, down={victim})


def test_failback_delayed_policy(stack: LabStack) -> None:
    stack.hang_sshd("h2")
    try:
        wait_for(lambda: not any(o == "h2" for o in stack.owners().values()), 20, what="h2's buckets to move")
    finally:
        stack.resume_sshd("h2")
    up_at = time.monotonic()
    stack.wait_converged(60, expect=homes(stack))
    waited = time.monotonic() - up_at
    print(f"failback after {waited:.1f} s (hold-down {stack.options.hold_down_s} s)")
    assert waited >= stack.options.hold_down_s, "failback came before the hold-down time"
    assert_clients_served(stack)


def test_drain_and_undrain(stack: LabStack) -> None:
    from controller.core.model import Intents
    from controller.core.schema import decode_intents, encode_intents
    from controller.core.zk_layout import intents_path

    client = stack.kazoo()
    try:
        path = intents_path("lab")
        client.ensure_path(path)
        client.set(path, encode_intents(Intents(drained=frozenset({"h1"}))))
        wait_for(lambda: not any(o == "h1" for o in stack.owners().values()), 20, what="h1 drained")
        stack.wait_converged(30)
        assert_clients_served(stack, down={"h1"})
        data, _ = client.get(path)
        intents = decode_intents(data)
        client.set(path, encode_intents(Intents(failback_requests={"h1": time.time()}, pins=intents.pins)))
    finally:
        client.stop()
        client.close()
    stack.wait_converged(60, expect=homes(stack))
    assert_clients_served(stack)


def test_lab_leaves_nothing_behind() -> None:
    leftovers = [n for n in netns.list_namespaces() if n.startswith("cif") and n.endswith("-h1")]
    # Only the module's own running lab may exist at this point; it is torn down after the module.
    assert len(leftovers) <= 1, leftovers

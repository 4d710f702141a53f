"""parse_config: valid files become the model; every kind of mistake is one line naming its key path."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.config import INTERFACE_PLACEHOLDER, MAC_PLACEHOLDER, parse_config
from controller.core.errors import ClusterIPFailoverError, ConfigError
from controller.core.model import ProbeSettings

ROOT = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = {
    "zookeeper": {"hosts": "127.0.0.1:2181", "chroot": "/clusterip-failover", "session_timeout_s": 4.0},
    "clusters": [
        {
            "name": "unix0",
            "vip": "129.65.158.160",
            "interface": "eth0",
            "backend": "clusterip",
            "buckets": 4,
            "cluster_mac": "01:00:5E:41:9E:A0",
            "ports": [22],
            "hash": {"mode": "sourceip", "hash_init": 0},
            "hosts": [
                {"id": "unix1", "ssh": "unix1.example.edu:22", "home_buckets": [1]},
                {"id": "unix2", "ssh": "unix2.example.edu:22", "home_buckets": [2]},
                {"id": "unix3", "ssh": "unix3.example.edu:22", "home_buckets": [3]},
                {"id": "unix4", "ssh": "unix4.example.edu:22", "home_buckets": [4]},
            ],
        }
    ],
}


def doc() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def cluster(d: dict[str, Any], index: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = d["clusters"][index]
    return result


def problems_of(data: Any) -> list[str]:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml")
    return info.value.problems


def one_problem(data: Any, path: str) -> str:
    """Exactly one problem, and it starts with the key path."""
    found = problems_of(data)
    assert len(found) == 1, found
    assert found[0].startswith(path + ": "), found
    assert "\n" not in found[0]
    assert "; " in found[0], "every problem names a fix after '; '"
    return found[0]


# --------------------------------------------------------------------------- valid files


def test_seed_example_parses() -> None:
    config = parse_config((ROOT / "deploy/examples/seed-unix0.yaml").read_text())
    spec = config.cluster("unix0")
    assert spec.backend == "clusterip"
    assert spec.vip == ipaddress.ip_address("129.65.158.160")
    assert spec.buckets == 4 and spec.ports == (22,)
    assert [(h.id, h.home_buckets) for h in spec.hosts] == [(f"unix{k}", (k,)) for k in range(1, 5)]
    assert spec.hosts[0].ssh_host == "unix1.csc.calpoly.edu" and spec.hosts[0].ssh_port == 22


def test_valid_multi_cluster_file_with_defaults() -> None:
    text = """
clusters:
  - name: unix0
    vip: 129.65.158.160
    interface: eth0
    backend: clusterip
    buckets: 6
    cluster_mac: "01:00:5e:41:9e:a0"
    hash: {mode: sourceip-sourceport, hash_init: 7}
    hosts:
      - {id: unix1}
      - {id: unix2, ssh: "[2001:db8::2]:2222"}
      - {id: unix3, ssh: unix3.example.edu}
  - name: web6
    vip: "2001:db8::80"
    interface: ens3
    backend: xt_cluster
    buckets: 32
    cluster_mac: "33:33:00:00:00:80"
    protocol: tcp
    ports: [80, 443]
    hash: {seed: "0x12345678"}
    hosts:
      - {id: a, home_buckets: [1, 2, 3]}
      - {id: b}
    probe: {interval_s: 0.5, fall: 2}
    failback: {policy: manual}
    handoff: {self_fence_fraction: 0.25}
  - name: dns
    vip: 198.18.0.53
    interface: eth1
    backend: nftables
    buckets: 256
    cluster_mac: "01:00:5E:00:00:35"
    protocol: udp
    hash: {seed: 42}
    hosts: [{id: n1}, {id: n2}]
"""
    config = parse_config(text)
    assert config.zookeeper.hosts == "127.0.0.1:2181"  # defaults
    unix0, web6, dns = config.clusters
    assert unix0.cluster_mac == "01:00:5E:41:9E:A0"  # normalised
    assert unix0.hash.mode == "sourceip-sourceport" and unix0.hash.hash_init == 7
    assert [h.home_buckets for h in unix0.hosts] == [(1, 4), (2, 5), (3, 6)]  # round robin
    assert (unix0.hosts[0].ssh_host, unix0.hosts[0].ssh_port) == ("unix1", 22)
    assert (unix0.hosts[1].ssh_host, unix0.hosts[1].ssh_port) == ("2001:db8::2", 2222)
    assert unix0.hosts[2].ssh_host == "unix3.example.edu"
    assert unix0.probe == ProbeSettings() and unix0.ports == () and unix0.protocol == "tcp"
    assert web6.vip.version == 6 and web6.hash.seed == 0x12345678
    assert web6.host("a").home_buckets == (1, 2, 3)
    assert web6.host("b").home_buckets == tuple(range(4, 33))  # the rest go to the host without a list
    assert web6.probe.interval_s == 0.5 and web6.probe.fall == 2
    assert web6.failback.policy == "manual" and web6.handoff.self_fence_fraction == 0.25
    assert dns.hash.seed == 42 and dns.protocol == "udp"
    assert sorted(b for h in dns.hosts for b in h.home_buckets) == list(range(1, 257))


def test_more_buckets_than_hosts_and_a_standby_host() -> None:
    d = doc()
    cluster(d)["buckets"] = 2
    for host in cluster(d)["hosts"]:
        del host["home_buckets"]
    spec = parse_config(yaml.safe_dump(d)).clusters[0]
    assert [h.home_buckets for h in spec.hosts] == [(1,), (2,), (), ()]


# --------------------------------------------------------------------------- one test per mistake


@pytest.mark.parametrize(("backend", "count", "limit"), [("clusterip", 17, 16), ("xt_cluster", 33, 32),
                                                          ("nftables", 257, 256)])
def test_bucket_count_above_backend_limit(backend: str, count: int, limit: int) -> None:
    d = doc()
    c = cluster(d)
    c.update(backend=backend, buckets=count, hash={})
    for host in c["hosts"]:
        del host["home_buckets"]
    line = one_problem(d, "clusters[0].buckets")
    assert f"{count} is above the {backend} limit of {limit}" in line


def test_nftables_needs_two_buckets() -> None:
    d = doc()
    c = cluster(d)
    c.update(backend="nftables", buckets=1, hash={}, hosts=[{"id": "a"}])
    assert "at least 2" in one_problem(d, "clusters[0].buckets")


def test_home_bucket_out_of_range() -> None:
    d = doc()
    cluster(d)["hosts"][2]["home_buckets"] = [3, 5]
    line = one_problem(d, "clusters[0].hosts[2].home_buckets")
    assert "bucket 5 is out of range 1..4" in line


def test_home_bucket_claimed_twice() -> None:
    d = doc()
    cluster(d)["hosts"][3]["home_buckets"] = [4, 2]
    line = one_problem(d, "clusters[0].hosts[3].home_buckets")
    assert "bucket 2 is already the home of 'unix2'" in line


def test_home_bucket_listed_twice_by_one_host() -> None:
    d = doc()
    cluster(d)["hosts"][0]["home_buckets"] = [1, 1]
    assert "listed twice" in one_problem(d, "clusters[0].hosts[0].home_buckets")


def test_unhomed_buckets_when_all_homes_are_explicit() -> None:
    d = doc()
    cluster(d)["buckets"] = 6
    line = one_problem(d, "clusters[0].hosts")
    assert "buckets 5, 6 have no home host" in line


def test_duplicate_host_ids() -> None:
    d = doc()
    cluster(d)["hosts"][2]["id"] = "unix1"
    found = problems_of(d)
    assert any(p.startswith("clusters[0].hosts[2].id: duplicate host id 'unix1' (also hosts[0])") for p in found)


@pytest.mark.parametrize("bad", ["unix/1", "", "a" * 65, "..", "has space"])
def test_host_id_must_be_a_safe_znode_name(bad: str) -> None:
    d = doc()
    cluster(d)["hosts"][0]["id"] = bad
    found = problems_of(d)
    assert any(p.startswith("clusters[0].hosts[0].id: ") for p in found), found


def test_host_id_read_as_boolean_by_yaml() -> None:
    text = yaml.safe_dump(doc()).replace("id: unix1", "id: no")
    line = one_problem(text, "clusters[0].hosts[0].id")
    assert "expected a string, got False" in line and "quotes" in line


def test_duplicate_cluster_names() -> None:
    d = doc()
    second = copy.deepcopy(cluster(d))
    second["vip"] = "129.65.158.161"
    d["clusters"].append(second)
    line = one_problem(d, "clusters[1].name")
    assert "duplicate cluster name 'unix0'" in line


def test_duplicate_vips_even_when_spelled_differently() -> None:
    d = doc()
    c = cluster(d)
    c.update(vip="2001:db8::1", backend="xt_cluster", hash={})
    second = copy.deepcopy(c)
    second.update(name="other", vip="2001:DB8:0::1")
    d["clusters"].append(second)
    line = one_problem(d, "clusters[1].vip")
    assert "already used by clusters[0]" in line


@pytest.mark.parametrize(("mac", "expect"), [
    ("00:11:22:33:44:55", "not a multicast MAC"),
    ("02:00:5E:41:9E:A0", "not a multicast MAC"),
    ("FF:FF:FF:FF:FF:FF", "not a multicast MAC"),
    ("01:00:5E:41:9E", "is not a MAC address"),
    ("01-00-5E-41-9E-A0", "is not a MAC address"),
    ("01:00:5E:41:9E:GG", "is not a MAC address"),
])
def test_bad_cluster_mac(mac: str, expect: str) -> None:
    d = doc()
    cluster(d)["cluster_mac"] = mac
    assert expect in one_problem(d, "clusters[0].cluster_mac")


def test_mac_that_yaml_reads_as_a_number() -> None:
    text = yaml.safe_dump(doc()).replace("cluster_mac: 01:00:5E:41:9E:A0", "cluster_mac: 11:22:33:44:55:01")
    assert "quotes" in one_problem(text, "clusters[0].cluster_mac")


def test_ipv6_with_clusterip() -> None:
    d = doc()
    cluster(d)["vip"] = "2001:db8::160"
    line = one_problem(d, "clusters[0].vip")
    assert "CLUSTERIP is IPv4 only" in line and "xt_cluster or nftables" in line


@pytest.mark.parametrize(("vip", "expect"), [("129.65.158.300", "not an IP address"),
                                              ("129.65.158.160/32", "without a prefix length"),
                                              ("224.0.0.1", "not a unicast address")])
def test_bad_vip(vip: str, expect: str) -> None:
    d = doc()
    cluster(d)["vip"] = vip
    assert expect in one_problem(d, "clusters[0].vip")


@pytest.mark.parametrize(("backend", "key"), [("xt_cluster", "mode"), ("nftables", "hash_init")])
def test_clusterip_hash_keys_with_other_backend(backend: str, key: str) -> None:
    d = doc()
    cluster(d).update(backend=backend, hash={key: "sourceip" if key == "mode" else 0})
    line = one_problem(d, f"clusters[0].hash.{key}")
    assert f"{backend} hashes the source address with a seed only" in line


def test_seed_with_clusterip() -> None:
    d = doc()
    cluster(d)["hash"] = {"seed": 5}
    assert "clusterip does not use a seed" in one_problem(d, "clusters[0].hash.seed")


def test_unknown_hash_mode_suggests() -> None:
    d = doc()
    cluster(d)["hash"] = {"mode": "sourceip-sourcepor"}
    assert "did you mean 'sourceip-sourceport'" in one_problem(d, "clusters[0].hash.mode")


@pytest.mark.parametrize("seed", ["0x1ffffffff", -1, "zz", True])
def test_bad_seed(seed: object) -> None:
    d = doc()
    cluster(d).update(backend="nftables", hash={"seed": seed})
    one_problem(d, "clusters[0].hash.seed")


@pytest.mark.parametrize(("where", "key", "path", "guess"), [
    ((), "zookeper", "zookeper", "zookeeper"),
    (("clusters", 0), "bukets", "clusters[0].bukets", "buckets"),
    (("clusters", 0, "hosts", 1), "home_bucket", "clusters[0].hosts[1].home_bucket", "home_buckets"),
    (("clusters", 0, "probe"), "intervall_s", "clusters[0].probe.intervall_s", "interval_s"),
    (("clusters", 0, "failback"), "hold_down", "clusters[0].failback.hold_down", "hold_down_s"),
    (("zookeeper",), "chrot", "zookeeper.chrot", "chroot"),
])
def test_unknown_key_suggests_closest(where: tuple[Any, ...], key: str, path: str, guess: str) -> None:
    d = doc()
    cluster(d).update(probe={}, failback={})
    node: Any = d
    for step in where:
        node = node[step]
    node[key] = 1
    found = problems_of(d)
    matching = [p for p in found if p.startswith(path + ": unknown key")]
    assert matching and f"did you mean '{guess}'?" in matching[0], found


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    d = doc()
    cluster(d)["hosts"][0]["zzz"] = 1
    assert "valid keys here: id, ssh, home_buckets" in one_problem(d, "clusters[0].hosts[0].zzz")


def test_wrong_type_buckets() -> None:
    d = doc()
    cluster(d)["buckets"] = "four"
    line = one_problem(d, "clusters[0].buckets")
    assert "expected an integer, got 'four'" in line


@pytest.mark.parametrize(("key", "value", "expect"), [
    ("ports", 22, "expected a list"),
    ("hosts", {"id": "a"}, "expected a list"),
    ("hash", "sourceip", "expected a mapping"),
    ("interface", 0, "expected a string"),
    ("buckets", 4.0, "expected an integer"),
    ("buckets", True, "expected an integer"),
    ("protocol", "sctp", "expected one of tcp, udp, all"),
])
def test_wrong_types(key: str, value: object, expect: str) -> None:
    d = doc()
    cluster(d)[key] = value
    found = problems_of(d)
    assert any(p.startswith(f"clusters[0].{key}: ") and expect in p for p in found), found


def test_wrong_type_duration() -> None:
    d = doc()
    cluster(d)["probe"] = {"interval_s": "fast"}
    assert "expected a number, got 'fast'" in one_problem(d, "clusters[0].probe.interval_s")


@pytest.mark.parametrize("key", ["name", "vip", "interface", "backend", "buckets", "cluster_mac", "hosts"])
def test_missing_required_cluster_key(key: str) -> None:
    d = doc()
    del cluster(d)[key]
    found = problems_of(d)
    assert f"clusters[0].{key}: missing required key; add '{key}:' here" in found


def test_missing_host_id_and_missing_clusters() -> None:
    d = doc()
    del cluster(d)["hosts"][1]["id"]
    assert "clusters[0].hosts[1].id: missing required key; add 'id:' here" in problems_of(d)
    assert any(p.startswith("clusters: missing required key") for p in problems_of({"zookeeper": {}}))


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = "clusters:\n  - name: unix0\n    vip: [1.2.3.4\n    interface: eth0\n"
    found = problems_of(text)
    assert len(found) == 1 and found[0].startswith("line ") and ", column " in found[0], found
    assert "YAML syntax error" in found[0]


def test_duplicate_yaml_key_is_reported_with_its_line() -> None:
    seed = (ROOT / "deploy/examples/seed-unix0.yaml").read_text()
    text = seed.replace("    buckets: 4\n", "    buckets: 4\n    buckets: 5\n")
    found = problems_of(text)
    assert any("duplicate key 'buckets'" in p and p.startswith("line 14:") and "line 13" in p for p in found), found


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[1, 2]", "just words"])
def test_empty_or_not_a_mapping(text: str) -> None:
    found = problems_of(text)
    assert found[0].startswith("<top level>: "), found


def test_empty_lists() -> None:
    assert any(p.startswith("clusters: the list is empty") for p in problems_of({"clusters": []}))
    d = doc()
    cluster(d)["hosts"] = []
    assert "the list is empty" in one_problem(d, "clusters[0].hosts")


def test_interface_placeholder_from_import_is_flagged() -> None:
    d = doc()
    cluster(d)["interface"] = INTERFACE_PLACEHOLDER
    assert "placeholder" in one_problem(d, "clusters[0].interface")


def test_mac_placeholder_from_import_is_flagged() -> None:
    d = doc()
    cluster(d)["cluster_mac"] = MAC_PLACEHOLDER
    assert "placeholder" in one_problem(d, "clusters[0].cluster_mac")


@pytest.mark.parametrize("name", ["eth0 1", "averyveryverylongname", "a/b", "eth0:1"])
def test_bad_interface_name(name: str) -> None:
    d = doc()
    cluster(d)["interface"] = name
    assert "not a Linux interface name" in one_problem(d, "clusters[0].interface")


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_self_fence_fraction_must_be_inside_0_1(fraction: float) -> None:
    d = doc()
    cluster(d)["handoff"] = {"self_fence_fraction": fraction}
    found = problems_of(d)
    assert any(p.startswith("clusters[0].handoff.self_fence_fraction: ") for p in found), found


def test_probe_timeout_longer_than_detection_window() -> None:
    d = doc()
    cluster(d)["probe"] = {"interval_s": 0.1, "fall": 2, "connect_timeout_s": 0.5, "banner_timeout_s": 0.1}
    assert "exceeds fall x interval_s" in one_problem(d, "clusters[0].probe.connect_timeout_s")


def test_probe_login_timeout_above_login_interval() -> None:
    d = doc()
    cluster(d)["probe"] = {"login_interval_s": 1.0, "login_timeout_s": 3.0}
    one_problem(d, "clusters[0].probe.login_timeout_s")


@pytest.mark.parametrize(("key", "value"), [("interval_s", 0), ("fall", 0), ("rise", -1)])
def test_probe_values_must_be_positive(key: str, value: float) -> None:
    d = doc()
    cluster(d)["probe"] = {key: value}
    found = problems_of(d)
    assert any(p.startswith(f"clusters[0].probe.{key}: ") for p in found), found


def test_failback_policy_and_negative_hold_down() -> None:
    d = doc()
    cluster(d)["failback"] = {"policy": "later", "hold_down_s": -1}
    found = problems_of(d)
    assert any(p.startswith("clusters[0].failback.policy: ") for p in found)
    assert any(p.startswith("clusters[0].failback.hold_down_s: ") for p in found)


def test_drain_settings_are_read_and_checked() -> None:
    d = doc()
    cluster(d)["failback"] = {"policy": "drain", "max_drain_s": 120, "drain_poll_s": 1}
    failback = parse_config(yaml.safe_dump(d, sort_keys=False), "test.yaml").clusters[0].failback
    assert (failback.policy, failback.max_drain_s, failback.drain_poll_s) == ("drain", 120, 1)
    cluster(d)["failback"] = {"max_drain_s": -5, "drain_poll_s": 0}
    found = problems_of(d)
    assert any(p.startswith("clusters[0].failback.max_drain_s: -5 is negative") for p in found), found
    assert any(p.startswith("clusters[0].failback.drain_poll_s: 0 is outside") for p in found), found
    cluster(d)["failback"] = {"max_drain": 5}
    assert any("max_drain_s" in p for p in problems_of(d)), "a misspelt key names the right one"


@pytest.mark.parametrize(("backend", "hash_settings", "policy"), [
    ("nftables", {"seed": 1}, "drain"), ("xt_cluster", {"seed": 1}, "drain"),
    ("clusterip", {"mode": "sourceip", "hash_init": 0}, "delayed"),
])
def test_failback_defaults_to_drain_where_the_backend_can_drain(
    backend: str, hash_settings: dict[str, Any], policy: str
) -> None:
    d = doc()
    cluster(d).update(backend=backend, hash=hash_settings)
    assert parse_config(yaml.safe_dump(d, sort_keys=False), "test.yaml").clusters[0].failback.policy == policy
    cluster(d)["failback"] = {"hold_down_s": 10}  # other failback keys keep the backend's default policy
    failback = parse_config(yaml.safe_dump(d, sort_keys=False), "test.yaml").clusters[0].failback
    assert (failback.policy, failback.hold_down_s) == (policy, 10)
    cluster(d)["failback"] = {"policy": "delayed"}  # a policy that is set is kept
    assert parse_config(yaml.safe_dump(d, sort_keys=False), "test.yaml").clusters[0].failback.policy == "delayed"


def test_ports_need_tcp_or_udp_and_a_valid_range() -> None:
    d = doc()
    cluster(d).update(protocol="all")
    assert "ports need protocol tcp or udp" in one_problem(d, "clusters[0].ports")
    d = doc()
    cluster(d)["ports"] = [22, 0]
    one_problem(d, "clusters[0].ports[1]")


@pytest.mark.parametrize("ssh", ["unix1:99999", "unix1:ssh", "[2001:db8::1", "a b:22", ":22"])
def test_bad_ssh_address(ssh: str) -> None:
    d = doc()
    cluster(d)["hosts"][0]["ssh"] = ssh
    assert "is not host:port" in one_problem(d, "clusters[0].hosts[0].ssh")


@pytest.mark.parametrize(("key", "value"), [("hosts", "zk:notaport"), ("chroot", "relative/path"),
                                             ("chroot", "/a//b"), ("session_timeout_s", 0)])
def test_bad_zookeeper_settings(key: str, value: object) -> None:
    d = doc()
    d["zookeeper"][key] = value
    one_problem(d, f"zookeeper.{key}")


def test_every_mistake_is_reported_at_once() -> None:
    d = doc()
    c = cluster(d)
    c.update(buckets="four", cluster_mac="00:00:00:00:00:00", vip="2001:db8::1", bogus=1)
    c["hosts"][1]["id"] = "unix1"
    c["handoff"] = {"self_fence_fraction": 2}
    d["zookeeper"]["chroot"] = "nope"
    found = problems_of(d)
    for path in ("clusters[0].buckets", "clusters[0].cluster_mac", "clusters[0].vip", "clusters[0].bogus",
                 "clusters[0].hosts[1].id", "clusters[0].handoff.self_fence_fraction", "zookeeper.chroot"):
        assert any(p.startswith(path + ": ") for p in found), (path, found)


def test_config_error_lines_carry_the_source() -> None:
    d = doc()
    cluster(d)["buckets"] = "four"
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(d), "site.yaml")
    assert info.value.lines() == ["site.yaml: clusters[0].buckets: expected an integer, got 'four'; "
                                  "write a whole number without quotes"]
    assert info.value.exit_code == 2 and isinstance(info.value, ClusterIPFailoverError)


@pytest.mark.parametrize("text", ["a: 2024-13-45\n", "clusters: [" * 5000, "x: !!python/object:os.system {}\n",
                                  "\x00", "a: &a [*a]\nclusters: *a\n"])
def test_hostile_yaml_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(text)


# --------------------------------------------------------------------------- property


KEYS = ["zookeeper", "clusters", "name", "vip", "interface", "backend", "buckets", "cluster_mac", "hosts",
        "id", "ssh", "home_buckets", "hash", "mode", "seed", "hash_init", "probe", "handoff", "failback",
        "ports", "protocol", "interval_s", "self_fence_fraction", "policy", "chroot", "x"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
    st.sampled_from(["clusterip", "xt_cluster", "nftables", "sourceip", "129.65.158.160", "2001:db8::1",
                     "01:00:5E:41:9E:A0", "eth0", "unix1", "unix1:22", "0xdeadbeef", "delayed", "tcp"]),
    st.text(max_size=12),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers(0, 3)), inner, max_size=6)),
    max_leaves=30,
)


def _check_only_config_error(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError as err:
        assert err.problems and all(isinstance(p, str) and "\n" not in p for p in err.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES)
def test_parse_config_raises_only_config_error_on_yaml_trees(tree: object) -> None:
    _check_only_config_error(yaml.safe_dump(tree))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES)
def test_parse_config_raises_only_config_error_inside_a_valid_frame(tree: object) -> None:
    d = doc()
    cluster(d)["hosts"][0]["home_buckets"] = tree
    cluster(d)["probe"] = tree
    d["clusters"].append(tree)
    _check_only_config_error(yaml.safe_dump(d))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*"ab:-[]{}, \n\t'\"#&*!|>%@`0.1\x00", "clusters", "name", "hosts"]), max_size=60)
       .map("".join))
def test_parse_config_raises_only_config_error_on_arbitrary_text(text: str) -> None:
    _check_only_config_error(text)

"""Hostile and malformed input for every decoder the project exposes to data it does not control.

Each property feeds generated garbage, near-miss documents, deep nesting and huge values to one
decoder and checks the contract: nothing but the project's own errors, every message one bounded
line naming where the problem is, sizes bounded, and each problem reported once. Decoders covered:
znode documents through the store (rogue members and statuses), the config file (alias bombs),
``clusterip-ctl`` arguments, the CLUSTERIP /proc control file, iptables-save text, the external
health file, and the peer datagrams between hooks.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import ZnodeStat

from controller.core import schema
from controller.core import zk_layout as layout
from controller.core.config import MAX_YAML_NODES, parse_config
from controller.core.errors import BackendError, ClusterIPFailoverError, ConfigError, SchemaError
from controller.core.health_file import MAX_HEALTH_FILE_BYTES, parse_health_file
from controller.core.iptables_save import parse_iptables_save
from controller.core.model import BucketMap, BucketState, HookStatus, Member
from controller.ctl.cli import EXIT_INTERNAL, cli
from controller.zk.store import ClusterStore
from node_hook.backends import _clusterip_proc
from node_hook.peers import MAX_DATAGRAM, _pack, _unpack

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "deploy" / "examples" / "seed-unix0.yaml"
#: A message is for one terminal line: long enough for a path, a value cut short and the fix.
MAX_MESSAGE = 400

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)
huge_ints = st.sampled_from([2**63, -(2**63) - 1, 10**40, -1, 0, 2**31, 257, 10**4000])
deep_json = st.builds(lambda n, o: o * n, st.integers(900, 100_000), st.sampled_from(["[", '{"a":', "[[{\"m\":"]))


def one_line(message: str, *needles: str) -> None:
    assert "\n" not in message and len(message) <= MAX_MESSAGE, message
    for needle in needles:
        assert needle in message, (needle, message)


# --------------------------------------------------------------------------- znodes, through the store


class _Reply:
    def __init__(self, value: tuple[bytes, ZnodeStat] | None) -> None:
        self.value = value

    def get(self, *_: object, **__: object) -> tuple[bytes, ZnodeStat]:
        if self.value is None:
            raise NoNodeError()
        return self.value


class FakeZooKeeper:
    """Enough of a KazooClient for ClusterStore.snapshot: pipelined gets of fixed znodes."""

    def __init__(self, znodes: dict[str, bytes]) -> None:
        self.znodes = znodes

    def get_async(self, path: str) -> _Reply:
        if path not in self.znodes:
            return _Reply(None)
        stat = ZnodeStat(1, 1, 0, 0, 0, 0, 0, 0x1234, len(self.znodes[path]), 0, 1)
        return _Reply((self.znodes[path], stat))


SPEC = parse_config(SEED.read_text()).clusters[0]


def _spec() -> Any:
    return SPEC


def _healthy_znodes(spec: Any) -> dict[str, bytes]:
    bucket_map = BucketMap(spec.name, 3, {b: BucketState(spec.home_of(b)) for b in range(1, spec.buckets + 1)})
    znodes = {layout.map_path(spec.name): schema.encode_map(bucket_map)}
    for host in spec.host_ids:
        znodes[layout.member_path(spec.name, host)] = schema.encode_member(
            Member(host, "192.0.2.1", "1", spec.backend))
        held = frozenset(b for b in range(1, spec.buckets + 1) if spec.home_of(b) == host)
        znodes[layout.status_path(spec.name, host)] = schema.encode_status(HookStatus(host, 3, held, 1.0))
    return znodes


def _rogue_documents(spec: Any) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(kind, document) of member and status znodes that lie: another host's id, buckets, huge values."""
    others = st.sampled_from([*spec.host_ids, "intruder", "../map", "", "a" * 65, "h\u00e9", 7, None])
    member = st.fixed_dictionaries(
        {"schema": st.just(1), "kind": st.just("member"), "host_id": others,
         "address": st.text(max_size=5) | st.just("x" * 600), "version": st.just("1"),
         "backend": st.sampled_from([spec.backend, "evil"])},
        optional={"buckets": st.lists(st.integers(1, 64), max_size=70), "owner": st.booleans(),
                  "epoch": huge_ints},
    )
    status = st.fixed_dictionaries(
        {"schema": st.sampled_from([1, 2, "1", None]), "kind": st.just("hook-status"), "host_id": others,
         "epoch": huge_ints | st.integers(0, 10),
         "held": st.lists(st.integers(-3, 300) | st.text(max_size=3), max_size=300) | json_values,
         "updated": st.floats() | huge_ints, "error": st.text(max_size=5) | st.just("e" * 5000)},
    )
    return st.tuples(st.just("member"), member) | st.tuples(st.just("hook-status"), status)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SPEC.host_ids), _rogue_documents(SPEC))
def test_rogue_member_and_status_znodes_are_each_reported_once_with_their_path(
    victim: str, rogue: tuple[str, dict[str, Any]]
) -> None:
    spec = _spec()
    znodes = _healthy_znodes(spec)
    kind, doc = rogue
    path = (layout.member_path if kind == "member" else layout.status_path)(spec.name, victim)
    raw = json.dumps(doc).encode()
    znodes[path] = raw
    snapshot = ClusterStore(FakeZooKeeper(znodes), spec).snapshot()  # type: ignore[arg-type]
    mine = [p for p in snapshot.problems if p.startswith(f"{path}:")]
    assert len(snapshot.problems) == len(mine) <= 1, snapshot.problems
    for problem in mine:
        one_line(problem, path)
    # Whatever was accepted is what the znode's own host may say about itself, and nothing else.
    if kind == "member" and victim in snapshot.members:
        assert snapshot.members[victim].host_id == victim == doc["host_id"]
        assert len(snapshot.members[victim].address) <= schema.MAX_TEXT
    if kind == "hook-status" and victim in snapshot.statuses:
        status = snapshot.statuses[victim]
        assert status.host_id == victim and status.held <= set(range(1, spec.buckets + 1))
    # A rogue znode never changes the map or the other hosts' records.
    assert snapshot.map == schema.decode_map(znodes[layout.map_path(spec.name)])
    assert {h for h in spec.host_ids if h != victim} <= set(snapshot.members) & set(snapshot.statuses)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["bucket-map", "member", "hook-status", "intents", "health", "history-event"]),
       st.dictionaries(st.sampled_from(["epoch", "buckets", "held", "host_id", "since", "drained", "pins",
                                        "time", "paused", "failback_requests", "reason"]),
                       huge_ints | st.just("x" * 100_000) | st.lists(st.just(1), min_size=300, max_size=2000),
                       min_size=1))
def test_huge_values_in_znodes_raise_only_schema_errors(kind: str, fields: dict[str, Any]) -> None:
    decoder = {"bucket-map": schema.decode_map, "member": schema.decode_member,
               "hook-status": schema.decode_status, "intents": schema.decode_intents,
               "health": schema.decode_health, "history-event": schema.decode_event}[kind]
    doc = {"schema": 1, "kind": kind, **fields}
    try:
        decoder(json.dumps(doc).encode())
    except SchemaError as exc:
        one_line(str(exc))


@settings(max_examples=30, deadline=None)
@given(deep_json)
def test_deeply_nested_json_is_a_schema_error_not_a_recursion_error(text: str) -> None:
    for decoder in (schema.decode_map, schema.decode_member, schema.decode_status, schema.decode_intents,
                    schema.decode_health, schema.decode_event):
        with pytest.raises(SchemaError) as exc:
            decoder(text.encode())
        one_line(str(exc.value))


def test_oversized_znode_is_refused_before_parsing() -> None:
    data = b'{"schema":1,"kind":"bucket-map","pad":"' + b"x" * (schema.MAX_DOCUMENT_BYTES + 1) + b'"}'
    with pytest.raises(SchemaError) as exc:
        schema.decode_map(data)
    one_line(str(exc.value), "limit")


# --------------------------------------------------------------------------- config file


def _alias_bomb(width: int, depth: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    return "\n".join([*lines, f"zookeeper: {{hosts: *l{depth - 1}}}", f"clusters: *l{depth - 1}", ""])


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(2, 10))
def test_config_alias_bombs_are_refused_quickly(width: int, depth: int) -> None:
    text = _alias_bomb(width, depth)
    start = time.monotonic()
    try:
        parse_config(text, "bomb.yaml")
    except ConfigError as exc:
        for line in exc.lines():
            one_line(line)
        if width**depth > MAX_YAML_NODES:
            assert any("aliases" in p for p in exc.problems), exc.problems
    assert time.monotonic() - start < 5.0


def test_config_recursive_alias_and_deep_nesting_are_one_problem_each() -> None:
    for text in ("a: &a [1, *a]\n", "a: " + "[" * 5000 + "]" * 5000 + "\n", "{" * 100_000):
        with pytest.raises(ConfigError) as exc:
            parse_config(text, "x.yaml")
        assert len(exc.value.problems) == 1, exc.value.problems
        one_line(exc.value.lines()[0], "x.yaml")


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["zookeeper", "clusters"]), json_values | huge_ints)
def test_config_sections_with_garbage_are_reported_by_key(section: str, value: object) -> None:
    doc = yaml.safe_load(SEED.read_text())
    doc[section] = value
    try:
        parse_config(yaml.safe_dump(doc), "c.yaml")
    except ConfigError as exc:
        assert len(set(exc.problems)) == len(exc.problems), "a problem was reported twice"
        for line in exc.lines():
            one_line(line, "c.yaml")


# --------------------------------------------------------------------------- clusterip-ctl arguments


_WORDS = ["status", "nodes", "drain", "undrain", "move", "failback", "pause", "resume", "which", "history",
          "config", "check", "import", "acl", "init", "--cluster", "--yes", "--json", "--to", "--since",
          "--sport", "--dport", "--backend", "--buckets", "--seed", "--hash-init", "--owner", "-c",
          "--credentials-dir", "unix0", "unix1", "nftables", "clusterip", "1", "0", "-1", "999999999999",
          "198.18.0.1", "::1", "\x00", "é", "--", "-", "x" * 300, "/nonexistent", "--help"]


@pytest.fixture(scope="module")
def unreachable_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    doc = yaml.safe_load(SEED.read_text())
    doc["zookeeper"] = {"hosts": "127.0.0.1:9", "chroot": "/hostile", "connect_timeout_s": 0.2}
    path = tmp_path_factory.mktemp("ctl") / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_WORDS) | st.text(string.printable, max_size=12), min_size=1, max_size=6))
def test_ctl_arguments_never_crash(unreachable_config: Path, argv: list[str]) -> None:
    if "import" in argv or "-c" in argv:
        argv = [a for a in argv if a not in ("import", "-c")]  # import reads stdin/ssh; -c a random file
    result = CliRunner().invoke(cli, argv, env={"CLUSTERIP_CONFIG": str(unreachable_config)}, input="")
    assert result.exit_code != EXIT_INTERNAL, (argv, result.output)
    assert "Traceback" not in result.output, (argv, result.output)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), (argv, repr(result.exception))


# --------------------------------------------------------------------------- /proc/net/ipt_CLUSTERIP


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80) | st.lists(st.integers(-5, 40), max_size=20).map(lambda b: ",".join(map(str, b)))
       | st.sampled_from(["1_0", "+1", " 1 , 2", "\u0661", "1,,2", "9" * 5000, "1\n2", "0x1"]))
def test_clusterip_proc_content_yields_buckets_1_to_16_or_one_backend_error(text: str) -> None:
    try:
        held = _clusterip_proc.parse(text)
    except BackendError as exc:
        one_line(str(exc), "CLUSTERIP control file")
        return
    assert held <= set(range(1, 17))
    assert held == {int(p) for p in text.strip().split(",") if text.strip()}


def test_clusterip_proc_real_formats() -> None:
    assert _clusterip_proc.parse("1,3,16\n") == {1, 3, 16}
    assert _clusterip_proc.parse("\n") == frozenset()
    for bad in ("-1", "17", "1_0", "\u0661", "0"):
        with pytest.raises(BackendError):
            _clusterip_proc.parse(bad)


# --------------------------------------------------------------------------- iptables-save


_IPT_TOKENS = ["-A", "INPUT", "-d", "198.18.0.1/32", "198.18.0.0/24", "::1/128", "-p", "tcp", "udp", "sctp", "-m",
               "cluster", "multiport", "--dports", "22,80", "1:3", "²", "-j", "CLUSTERIP", "--new",
               "--hashmode", "sourceip", "--clustermac", "01:00:5E:00:00:01", "--total-nodes", "--local-node",
               "--hash-init", "--cluster-total-nodes", "--cluster-local-nodemask", "--cluster-local-node",
               "--cluster-hash-seed", "0xdeadbeef", "0x1ffffffff", "4", "3", "99", "!", "-i", "eth0", "'",
               '"', "9" * 5000, "x" * 300, "--dport"]


@st.composite
def iptables_text(draw: st.DrawFn) -> str:
    lines = [draw(st.sampled_from(["*filter", "*mangle", "*nat", "", ":INPUT ACCEPT [0:0]", "COMMIT"]))]
    for _ in range(draw(st.integers(0, 6))):
        tokens = draw(st.lists(st.sampled_from(_IPT_TOKENS) | st.text(max_size=8), max_size=16))
        lines.append(" ".join(["-A", *tokens]))
    return "\n".join(lines)


@settings(max_examples=150, deadline=None)
@given(iptables_text() | st.text(max_size=300))
def test_iptables_save_text_yields_rules_or_findings_only(text: str) -> None:
    rules, findings = parse_iptables_save(text, "h1")
    numbered = [f.message.split(":", 1)[0] for f in findings if f.message.startswith("line ")]
    assert len(numbered) == len(set(numbered)), "a line was reported twice"
    for finding in findings:
        one_line(str(finding))
    for rule in rules:
        assert rule.buckets <= set(range(1, 33)) and (rule.total is None or 1 <= rule.total <= 32)


def test_iptables_save_oversized_input_is_one_finding() -> None:
    rules, findings = parse_iptables_save("*filter\n" + "#" * (64 * 1024 * 1024), "h1")
    assert rules == [] and len(findings) == 1
    one_line(str(findings[0]), "iptables-save")


# --------------------------------------------------------------------------- external health file


@settings(max_examples=150, deadline=None)
@given(json_values | st.dictionaries(st.sampled_from(["unix1", "unix2", "x" * 500, ""]),
                                     json_values | st.sampled_from(["up", "DOWN", "suspect", "bogus"]),
                                     max_size=6).map(json.dumps)
       | st.text(max_size=200) | deep_json)
def test_health_file_yields_verdicts_or_one_schema_error(value: object) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        verdicts, warnings = parse_health_file(text, ["unix1", "unix2"], {}, 100.0)
    except SchemaError as exc:
        one_line(str(exc), "health file")
        return
    assert set(verdicts) == {"unix1", "unix2"}
    assert len(warnings) == len(set(warnings))
    for line in warnings:
        one_line(line)
    assert all(len(v.reason) <= 200 for v in verdicts.values())


def test_health_file_size_is_bounded() -> None:
    with pytest.raises(SchemaError) as exc:
        parse_health_file(" " * (MAX_HEALTH_FILE_BYTES + 1), ["unix1"], {}, 0.0)
    one_line(str(exc.value), "limit")


# --------------------------------------------------------------------------- peer datagrams


_peer_messages = st.dictionaries(st.sampled_from(["c", "q", "n", "h", "ok", "silent"]), json_values, max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=MAX_DATAGRAM) | deep_json.map(lambda t: t.encode()[:MAX_DATAGRAM])
       | json_values.map(lambda v: json.dumps(v).encode()[:MAX_DATAGRAM])
       | st.builds(lambda inner: json.dumps({"m": inner, "s": 5}).encode(), json_values)
       | st.builds(lambda inner: json.dumps({"m": json.dumps(inner)}).encode(), json_values | deep_json),
       st.sampled_from([b"", b"secret"]))
def test_peer_datagrams_decode_to_a_dict_or_none(data: bytes, secret: bytes) -> None:
    message = _unpack(secret, data)
    assert message is None or isinstance(message, dict)


@settings(max_examples=200, deadline=None)
@given(_peer_messages, st.binary(min_size=1, max_size=32), st.integers(0, 200))
def test_peer_datagram_with_a_tampered_or_foreign_signature_is_dropped(
    message: dict[str, Any], secret: bytes, flip: int
) -> None:
    packed = _pack(secret, message)
    assert _unpack(secret, packed) == json.loads(json.dumps(message))
    assert _unpack(secret + b"x", packed) is None
    outer = json.loads(packed)
    outer["m"] = outer["m"] + " " * (1 + flip % 3)
    assert _unpack(secret, json.dumps(outer).encode()) is None


# --------------------------------------------------------------------------- the family of errors


@pytest.mark.parametrize("decode", [
    lambda: schema.decode_map(b"\xff"),
    lambda: parse_config("a: [", "f.yaml"),
    lambda: _clusterip_proc.parse("nope"),
    lambda: parse_health_file("[", ["a"], {}, 0.0),
])
def test_every_decoder_error_is_the_projects_own(decode: Callable[[], object]) -> None:
    with pytest.raises(ClusterIPFailoverError):
        decode()

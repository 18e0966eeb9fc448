"""Goal: pids, refs and registered names survive every form they travel in.

Method: hypothesis draws valid node names (``name@host`` with a DNS name, an IPv4
address or a bracketed IPv6 address as host), any non-negative creation and id,
and any unicode registered name, then checks that the URI form and the tuple form
both round-trip and that ``parse_target`` accepts every documented spelling. A
table of malformed inputs, and a property over arbitrary text, check that a bad
reference raises :class:`BadReference` and nothing else (DESIGN.md, Remote refs and
Pid identity). Defects these tests found are kept below as regression tests.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from runtime.ref import (
    NODE_NAME_BYTES_MAX,
    BadReference,
    Name,
    Pid,
    Ref,
    node_host,
    parse_target,
    validate_node_name,
)

# --- Strategies -------------------------------------------------------------

_NAME_PART = st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True)
_DNS_LABEL = st.from_regex(
    r"[A-Za-z0-9]([A-Za-z0-9\-]{0,14}[A-Za-z0-9])?", fullmatch=True
)
_DNS_HOST = st.lists(_DNS_LABEL, min_size=1, max_size=4).map(".".join)
_IPV4_HOST = st.ip_addresses(v=4).map(str)
_IPV6_HOST = st.ip_addresses(v=6).map(lambda address: f"[{address}]")
HOSTS = st.one_of(_DNS_HOST, _IPV4_HOST, _IPV6_HOST)
NODES = st.builds(lambda name, host: f"{name}@{host}", _NAME_PART, HOSTS)
# Creations and ids are unbounded non-negative integers (CBOR carries bignums).
COUNTERS = st.integers(min_value=0) | st.integers(min_value=0, max_value=2**70)
# Any unicode text except surrogates (which no UTF-8 URI can carry).
REGISTERED_NAMES = st.text(min_size=1)
AWKWARD_NAMES = st.sampled_from(
    ["a:b", "100%", "%41", "a/b", "with space", "x?y#z", "::", "é", "名前", "🙂"]
)


# --- Node names -------------------------------------------------------------


@given(node=NODES)
def test_validate_node_name_returns_input_for_valid_names(node: str) -> None:
    assert validate_node_name(node) is node


@pytest.mark.parametrize(
    ("node", "host"),
    [
        ("a@localhost", "localhost"),
        ("node_1.x-y@example.com", "example.com"),
        ("a@127.0.0.1", "127.0.0.1"),
        ("a@[::1]", "::1"),
        ("a@[fe80::1:2]", "fe80::1:2"),
        ("a@[::ffff:10.0.0.1]", "::ffff:10.0.0.1"),
    ],
)
def test_node_host_strips_ipv6_brackets_when_present(node: str, host: str) -> None:
    assert node_host(node) == host


@pytest.mark.parametrize(
    "node",
    [
        "",
        "a",
        "@host",
        "a@",
        "a@@b",
        "a b@host",
        "a@ho st",
        "a@-host",
        "a@host-",
        "a@.host",
        "a@host.",
        "a@::1",
        "a@[::1",
        "a@::1]",
        "a@[]",
        "a@[zz::1]",
        "é@host",
        "a@hôst",
        "a@host\n",
        "a:b@host",
        "a@host:4369",
        "a@" + "h" * NODE_NAME_BYTES_MAX,
    ],
)
def test_validate_node_name_raises_bad_reference_when_malformed(node: str) -> None:
    with pytest.raises(BadReference):
        validate_node_name(node)


@pytest.mark.parametrize("node", [None, 1, b"a@host", ["a@host"], ("a", "host")])
def test_validate_node_name_raises_bad_reference_when_not_str(node: object) -> None:
    with pytest.raises(BadReference):
        validate_node_name(node)


def test_validate_node_name_accepts_names_up_to_the_length_bound() -> None:
    longest = "a@" + "h" * (NODE_NAME_BYTES_MAX - 2)
    assert validate_node_name(longest) == longest
    with pytest.raises(BadReference):
        validate_node_name(longest + "h")


def test_bad_reference_is_a_value_error() -> None:
    assert issubclass(BadReference, ValueError)


# --- Pids and refs ----------------------------------------------------------


@given(node=NODES, creation=COUNTERS, ident=COUNTERS)
def test_pid_round_trips_through_uri_and_tuple_for_any_valid_node(
    node: str, creation: int, ident: int
) -> None:
    pid = Pid(node=node, creation=creation, id=ident)
    assert pid.uri == f"partisan:pid:{node}:{creation}.{ident}"
    assert str(pid) == pid.uri
    assert Pid.from_uri(pid.uri) == pid
    assert Pid.from_uri(pid.uri).uri == pid.uri
    assert pid.to_tuple() == ("pid", node, creation, ident)
    assert parse_target(pid.uri) == pid
    assert parse_target(pid.to_tuple()) == pid
    assert type(parse_target(pid.uri)) is Pid


@given(node=NODES, creation=COUNTERS, ident=COUNTERS)
def test_ref_round_trips_through_uri_and_tuple_for_any_valid_node(
    node: str, creation: int, ident: int
) -> None:
    ref = Ref(node=node, creation=creation, id=ident)
    assert ref.uri == f"partisan:ref:{node}:{creation}.{ident}"
    assert str(ref) == ref.uri
    assert Ref.from_uri(ref.uri) == ref
    assert ref.to_tuple() == ("ref", node, creation, ident)
    assert parse_target(ref.uri) == ref
    assert parse_target(ref.to_tuple()) == ref
    assert type(parse_target(ref.to_tuple())) is Ref


def test_pid_and_ref_with_same_fields_differ_when_compared() -> None:
    pid = Pid(node="a@host", creation=1, id=2)
    ref = Ref(node="a@host", creation=1, id=2)
    assert parse_target(pid.uri) != parse_target(ref.uri)
    assert pid.uri != ref.uri


def test_pid_equality_and_hash_ignore_nothing_but_fields() -> None:
    one = Pid(node="a@host", creation=1, id=2)
    same = Pid.from_uri("partisan:pid:a@host:1.2")
    assert one == same
    assert hash(one) == hash(same)
    assert {one: "x"}[same] == "x"
    assert one != Pid(node="a@host", creation=2, id=2)
    assert one != Pid(node="b@host", creation=1, id=2)


def test_pid_is_frozen_when_assigned() -> None:
    pid = Pid(node="a@host", creation=1, id=2)
    with pytest.raises(AttributeError):
        pid.id = 3  # type: ignore[misc]


@given(node=NODES, creation=COUNTERS, ident=COUNTERS)
def test_from_uri_refuses_the_other_kind_for_any_ref(
    node: str, creation: int, ident: int
) -> None:
    pid = Pid(node=node, creation=creation, id=ident)
    ref = Ref(node=node, creation=creation, id=ident)
    with pytest.raises(BadReference):
        Ref.from_uri(pid.uri)
    with pytest.raises(BadReference):
        Pid.from_uri(ref.uri)
    with pytest.raises(BadReference):
        Name.from_uri(pid.uri.replace("partisan:pid:", "partisan:ref:"))


# --- Registered names -------------------------------------------------------


@given(node=NODES, name=REGISTERED_NAMES | AWKWARD_NAMES)
def test_name_round_trips_through_uri_and_tuple_for_any_text(
    node: str, name: str
) -> None:
    ref = Name(node=node, name=name)
    prefix = f"partisan:name:{node}:"
    assert ref.uri.startswith(prefix)
    encoded = ref.uri[len(prefix) :]
    # Percent-encoding leaves the last field free of separators and spaces.
    assert not set(encoded) & set(":/ ?#@")
    assert set(encoded) <= set(string.ascii_letters + string.digits + "%-._~")
    assert Name.from_uri(ref.uri) == ref
    assert parse_target(ref.uri) == ref
    assert ref.to_tuple() == ("name", node, name)
    assert parse_target(ref.to_tuple()) == ref
    assert parse_target((name, node)) == ref


def test_name_percent_encodes_reserved_characters_when_present() -> None:
    ref = Name(node="a@[::1]", name="x:y/z 100%")
    assert ref.uri == "partisan:name:a@[::1]:x%3Ay%2Fz%20100%25"
    assert Name.from_uri(ref.uri).name == "x:y/z 100%"


def test_name_raises_bad_reference_when_empty() -> None:
    with pytest.raises(BadReference):
        Name(node="a@host", name="")


# --- parse_target -----------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        Pid(node="a@host", creation=1, id=2),
        Ref(node="a@127.0.0.1", creation=0, id=0),
        Name(node="a@[::1]", name="server"),
    ],
)
def test_parse_target_returns_objects_unchanged(ref: Pid | Ref | Name) -> None:
    assert parse_target(ref) is ref


def test_parse_target_reads_erlang_style_name_node_pair() -> None:
    assert parse_target(("server", "a@host")) == Name(node="a@host", name="server")


@pytest.mark.parametrize(
    "target",
    [
        # Wrong scheme or kind.
        "",
        "pid:a@host:1.2",
        "partisan:",
        "partisan:pid",
        "partisan:pid:",
        "Partisan:pid:a@host:1.2",
        "partisan:PID:a@host:1.2",
        "partisan:proc:a@host:1.2",
        "http://a@host/1.2",
        # Missing fields.
        "partisan:pid:a@host",
        "partisan:pid:a@host:",
        "partisan:pid::1.2",
        "partisan:pid:1.2",
        "partisan:ref:a@host:1",
        "partisan:ref:a@host:1.",
        "partisan:ref:a@host:.2",
        "partisan:name:a@host",
        "partisan:name:a@host:",
        "partisan:name::server",
        # Negative or non-digit ids.
        "partisan:pid:a@host:-1.2",
        "partisan:pid:a@host:1.-2",
        "partisan:pid:a@host:+1.2",
        "partisan:pid:a@host:1.2.3",
        "partisan:pid:a@host:1_0.2",
        "partisan:pid:a@host: 1.2",
        "partisan:pid:a@host:1.2 ",
        "partisan:pid:a@host:0x1.2",
        "partisan:ref:a@host:a.b",
        "partisan:ref:a@host:1e3.2",
        # Bad node names.
        "partisan:pid:host:1.2",
        "partisan:pid:a@ho st:1.2",
        "partisan:pid:a@::1:1.2",
        "partisan:ref:@host:1.2",
        "partisan:name:a@-x:server",
        "partisan:name:a@host:x:y",
        # Tuples.
        (),
        ("pid",),
        ("pid", "a@host", 1),
        ("pid", "a@host", 1, 2, 3),
        ("pid", "a@host", "1", 2),
        ("pid", "a@host", 1, 2.0),
        ("pid", "nodeless", 1, 2),
        ("ref", "a@host", None, 2),
        ("name", "a@host", ""),
        ("name", "a@host", 5),
        ("name", "a b@host", "server"),
        ("server", "nodeless"),
        ("server", "bad@node@x"),
        ("", "a@host"),
        (1, "a@host"),
        ("proc", "a@host", 1, 2),
        # Not a target at all.
        None,
        1,
        1.5,
        b"partisan:pid:a@host:1.2",
        ["pid", "a@host", 1, 2],
        {"pid": "a@host"},
        object(),
    ],
)
def test_parse_target_raises_bad_reference_when_malformed(target: object) -> None:
    with pytest.raises(BadReference):
        parse_target(target)


_FRAGMENTS = st.sampled_from(
    [
        "partisan:",
        "partisan:pid:",
        "partisan:ref:",
        "partisan:name:",
        "a@host",
        "a@[::1]",
        "a@10.0.0.1",
        "@",
        ":",
        ".",
        "[",
        "]",
        "0",
        "7",
        "12",
        "-",
        "+",
        " ",
        "_",
    ]
)
_SAFE_TEXT = st.text(max_size=12)


@given(text=st.lists(_FRAGMENTS | _SAFE_TEXT, max_size=8).map("".join))
@example(text="partisan:pid:a@host:1.2")
@example(text="partisan:name:a@host:%41")
def test_parse_target_gives_ref_or_bad_reference_for_any_text(text: str) -> None:
    try:
        ref = parse_target(text)
    except BadReference:
        return
    assert isinstance(ref, Pid | Ref | Name)
    # Anything accepted is a real reference: its own URI parses back to it.
    assert parse_target(ref.uri) == ref
    assert parse_target(ref.to_tuple()) == ref


@given(target=st.tuples(st.text(max_size=5), NODES | st.text(max_size=10)))
def test_parse_target_gives_name_or_bad_reference_for_any_pair(
    target: tuple[str, str],
) -> None:
    try:
        ref = parse_target(target)
    except BadReference:
        return
    assert ref == Name(node=target[1], name=target[0])


# --- Defects found by these tests, fixed in runtime/ref.py (regressions) --


def test_parse_target_raises_bad_reference_when_id_is_superscript_digit() -> None:
    with pytest.raises(BadReference):
        parse_target("partisan:pid:a@host:\u00b2.1")


def test_pid_from_uri_raises_bad_reference_when_id_is_non_ascii_digit() -> None:
    with pytest.raises(BadReference):
        Pid.from_uri("partisan:pid:a@host:\u0663.1")


@pytest.mark.parametrize(
    "uri", ["partisan:name:a@host:%ff", "partisan:name:a@h:%ed%a0%80"]
)
def test_name_from_uri_raises_bad_reference_when_escape_is_not_utf8(uri: str) -> None:
    with pytest.raises(BadReference):
        parse_target(uri)


@pytest.mark.parametrize(
    "target",
    [
        ("pid", "a@host", -1, 0),
        ("pid", "a@host", 0, -1),
        ("ref", "a@host", -5, 2),
        ("pid", "a@host", True, False),
    ],
)
def test_parse_target_raises_bad_reference_when_tuple_ids_invalid(
    target: tuple[object, ...],
) -> None:
    with pytest.raises(BadReference):
        parse_target(target)


def test_parse_target_raises_bad_reference_when_name_has_surrogate() -> None:
    with pytest.raises(BadReference):
        parse_target(("name", "a@host", "\ud800"))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Pid(node="nonsense", creation=0, id=0),
        lambda: Pid(node="a@host", creation=-1, id=0),
        lambda: Ref(node="a@host", creation=0, id=-1),
        lambda: Name(node="x", name="server"),
    ],
)
def test_constructors_raise_bad_reference_when_fields_invalid(build: object) -> None:
    assert callable(build)
    with pytest.raises(BadReference):
        build()

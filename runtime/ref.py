"""Remote references: pids, refs and registered names, in tuple and URI forms.

A reference names something on a node so that any node can aim a message at it.
Three kinds exist, as in Partisan:

======  ==========================================  ==============================
kind    URI form                                    tuple form
======  ==========================================  ==============================
pid     ``partisan:pid:NODE:CREATION.ID``           ``("pid", NODE, CREATION, ID)``
ref     ``partisan:ref:NODE:CREATION.ID``           ``("ref", NODE, CREATION, ID)``
name    ``partisan:name:NODE:PERCENT-ENCODED-NAME``  ``("name", NODE, NAME)``
======  ==========================================  ==============================

``CREATION`` is the node's incarnation, chosen afresh at every start, so a pid of a
node's earlier life never reaches a process of its next life (DESIGN.md, Pid identity).

Node names are ``name@host``: the name part is ``[A-Za-z0-9_.-]+`` and the host a
DNS name, an IPv4 address or a bracketed IPv6 address (``a@[::1]``). Because a host
may hold colons, URIs are parsed from the right: the last field never holds a colon
(ids are digits, names are percent-encoded).

Every parser raises :class:`BadReference` (a ``ValueError``) with the offending text,
never a bare ``IndexError`` or a half-built object.
"""

from __future__ import annotations

import re
from typing import Final, TypeAlias, final
from urllib.parse import quote, unquote

import attrs

__all__ = [
    "BadReference",
    "Name",
    "Pid",
    "Ref",
    "Target",
    "node_host",
    "parse_target",
    "validate_node_name",
]

_SCHEME: Final = "partisan:"
_NODE_NAME_RE: Final = re.compile(
    r"""
    (?P<name>[A-Za-z0-9_.\-]+)
    @
    (?P<host>
        \[[0-9A-Fa-f:.]+\]           # bracketed IPv6
      | [A-Za-z0-9]([A-Za-z0-9\-.]*[A-Za-z0-9])?   # DNS name or IPv4
    )
    """,
    re.VERBOSE,
)
# Node names are bounded so a hostile hello cannot make us keep megabytes per peer.
NODE_NAME_BYTES_MAX: Final = 255


class BadReference(ValueError):
    """A node name, pid, ref or name URI that does not parse."""


def validate_node_name(node: object) -> str:
    """Return *node* unchanged if it is a valid ``name@host``.

    Raises:
        BadReference: if it is not.
    """
    if (
        not isinstance(node, str)
        or len(node) > NODE_NAME_BYTES_MAX
        or _NODE_NAME_RE.fullmatch(node) is None
    ):
        raise BadReference(f"not a node name (want name@host): {node!r}")
    return node


def node_host(node: str) -> str:
    """The host part of a node name, without IPv6 brackets."""
    host = validate_node_name(node).split("@", 1)[1]
    return host[1:-1] if host.startswith("[") else host


def _is_digits(text: str) -> bool:
    # str.isdigit() alone accepts superscripts and other scripts' digits.
    return text.isascii() and text.isdigit()


def _split_local(text: str, uri: object) -> tuple[int, int]:
    creation, dot, ident = text.partition(".")
    if not dot or not _is_digits(creation) or not _is_digits(ident):
        raise BadReference(f"want CREATION.ID at the end of {uri!r}")
    return int(creation), int(ident)


def _check_local(kind: str, node: object, creation: object, ident: object) -> None:
    """Values are checked when built (STYLE.md): a pid whose URI does not parse
    back must never exist."""
    validate_node_name(node)
    for label, value in (("creation", creation), ("id", ident)):
        if type(value) is not int or value < 0:
            raise BadReference(f"{kind} {label} must be an int >= 0, not {value!r}")


@final
@attrs.frozen(slots=True, cache_hash=True)
class Pid:
    """A process identifier: the process *id* on *node* in incarnation *creation*.

    The URI string is the process's key in its node's routing table, so it is
    computed once (``uri``) and carried as is in message envelopes.
    """

    node: str
    creation: int
    id: int
    uri: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_local("pid", self.node, self.creation, self.id)
        object.__setattr__(
            self, "uri", f"partisan:pid:{self.node}:{self.creation}.{self.id}"
        )

    @classmethod
    def from_uri(cls, uri: object) -> Pid:
        """Parse ``partisan:pid:NODE:CREATION.ID``."""
        node, local = _parse_uri(uri, "pid")
        creation, ident = _split_local(local, uri)
        return cls(node=node, creation=creation, id=ident)

    def to_tuple(self) -> tuple[str, str, int, int]:
        return ("pid", self.node, self.creation, self.id)

    def __str__(self) -> str:
        return self.uri


@final
@attrs.frozen(slots=True, cache_hash=True)
class Ref:
    """A unique reference (monitor refs, call correlation), unique per incarnation."""

    node: str
    creation: int
    id: int
    uri: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_local("ref", self.node, self.creation, self.id)
        object.__setattr__(
            self, "uri", f"partisan:ref:{self.node}:{self.creation}.{self.id}"
        )

    @classmethod
    def from_uri(cls, uri: object) -> Ref:
        """Parse ``partisan:ref:NODE:CREATION.ID``."""
        node, local = _parse_uri(uri, "ref")
        creation, ident = _split_local(local, uri)
        return cls(node=node, creation=creation, id=ident)

    def to_tuple(self) -> tuple[str, str, int, int]:
        return ("ref", self.node, self.creation, self.id)

    def __str__(self) -> str:
        return self.uri


@final
@attrs.frozen(slots=True, cache_hash=True)
class Name:
    """A registered name on a node; resolved on that node when a message arrives."""

    node: str
    name: str
    uri: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        validate_node_name(self.node)
        name: object = self.name  # checked at run time: it may come from the wire
        if not isinstance(name, str) or not name:
            raise BadReference(f"a registered name is a non-empty str: {name!r}")
        try:
            encoded = quote(self.name, safe="")
        except UnicodeEncodeError:
            raise BadReference(f"name is not valid Unicode: {self.name!r}") from None
        object.__setattr__(self, "uri", f"partisan:name:{self.node}:{encoded}")

    @classmethod
    def from_uri(cls, uri: object) -> Name:
        """Parse ``partisan:name:NODE:NAME`` (NAME percent-encoded)."""
        node, local = _parse_uri(uri, "name")
        try:
            name = unquote(local, errors="strict")
        except UnicodeDecodeError:
            raise BadReference(f"name is not UTF-8 in {uri!r}") from None
        return cls(node=node, name=name)

    def to_tuple(self) -> tuple[str, str, str]:
        return ("name", self.node, self.name)

    def __str__(self) -> str:
        return self.uri


def _parse_uri(uri: object, kind: str) -> tuple[str, str]:
    prefix = f"{_SCHEME}{kind}:"
    if not isinstance(uri, str) or not uri.startswith(prefix):
        raise BadReference(f"not a {kind} URI (want {prefix}NODE:...): {uri!r}")
    node, colon, local = uri[len(prefix) :].rpartition(":")
    if not colon or not local:
        raise BadReference(f"missing the last field in {uri!r}")
    try:
        validate_node_name(node)
    except BadReference:
        raise BadReference(f"bad node name in {uri!r}") from None
    return node, local


Target: TypeAlias = "Pid | Name | str | tuple[object, ...]"


def parse_target(target: object) -> Pid | Name | Ref:
    """Turn any accepted form of a target into a reference object.

    Accepts a :class:`Pid`, :class:`Name` or :class:`Ref`, their URI strings, and
    their tuple forms. ``("name", NODE, NAME)`` and ``(NAME, NODE)`` (Erlang's
    ``{Name, Node}``) both name a registered process.

    Raises:
        BadReference: if *target* is none of these.
    """
    if isinstance(target, Pid | Name | Ref):
        return target
    if isinstance(target, str):
        if target.startswith("partisan:pid:"):
            return Pid.from_uri(target)
        if target.startswith("partisan:name:"):
            return Name.from_uri(target)
        if target.startswith("partisan:ref:"):
            return Ref.from_uri(target)
        raise BadReference(f"not a partisan URI: {target!r}")
    if isinstance(target, tuple):
        return _from_tuple(target)
    raise BadReference(f"not a target: {target!r}")


def _from_tuple(t: tuple[object, ...]) -> Pid | Name | Ref:
    match t:
        case ("pid", str(node), int(creation), int(ident)):
            return Pid(node=validate_node_name(node), creation=creation, id=ident)
        case ("ref", str(node), int(creation), int(ident)):
            return Ref(node=validate_node_name(node), creation=creation, id=ident)
        case ("name", str(node), str(name)):
            return Name(node=validate_node_name(node), name=name)
        case (str(name), str(node)) if "@" in node:
            return Name(node=validate_node_name(node), name=name)
    raise BadReference(f"not a target tuple: {t!r}")

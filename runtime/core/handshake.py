"""The connection handshake: versioned hello and mutual HMAC challenge-response.

Theory of operation
-------------------
Every connection is opened by an *initiator* (the node that dials) and accepted by
an *acceptor*. Data only ever flows from initiator to acceptor after the
handshake (each node sends on the connections it dialled), so the handshake is the
whole conversation in the other direction.

::

    initiator                                  acceptor
    ---------                                  --------
    Hello(versions, node, creation,
          channel, index, nonce_i)   ------>   check version, channel
                                     <------   Welcome(version, node, creation,
                                                       nonce_a, proofs_a)
    verify proofs_a, node
    Auth(proofs_i)                   ------>   verify proofs_i
                                     <------   Ready
    established                                established

A *proof* is ``(key_id, HMAC-SHA256(key, label || transcript))`` where the
transcript binds both nonces, both node names and creations, the channel, the
connection index and the chosen version, and the label differs per role so that a
proof can never be replayed as the other side's. Each side sends one proof per key
in its keyring, and accepts the other's if any key id it knows carries a valid MAC:
keys rotate by adding a key everywhere, switching, then retiring the old one. Key
ids are a truncated hash of the key, which reveals nothing usable about it.

Any refusal raises :class:`HandshakeError`, whose ``reply`` (if not ``None``) is a
Reject body the shell should try to send before closing, so the peer can log why.

State table
-----------

=========== ============ ============== ==============================
role        state        event          next state / effect
=========== ============ ============== ==============================
initiator   START        start()        SENT_HELLO / send Hello
initiator   SENT_HELLO   Welcome ok     SENT_AUTH / send Auth
initiator   SENT_AUTH    Ready          DONE / Established
acceptor    START        Hello ok       SENT_WELCOME / send Welcome
acceptor    SENT_WELCOME Auth ok        DONE / send Ready, Established
any         any          Reject/other   error (HandshakeError)
=========== ============ ============== ==============================

The core holds no clock: the shell bounds the whole exchange with a timeout.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Sequence
from typing import Final, final

import attrs
import cbor2

from runtime.errors import HandshakeError
from runtime.ref import BadReference, validate_node_name

__all__ = [
    "PROTOCOL_VERSIONS",
    "Established",
    "Handshake",
    "Keyring",
    "PeerIdentity",
    "Role",
    "SendBody",
]

# Versions this build speaks; the acceptor picks the highest one both list.
PROTOCOL_VERSIONS: Final = (1,)
NONCE_BYTES: Final = 32
_KEY_ID_BYTES: Final = 8
# A keyring longer than this is a configuration mistake, and a hello listing more
# proofs than this is hostile.
KEYRING_SIZE_MAX: Final = 8
# Connection indexes per channel: ChannelSpec allows parallelism up to 64; a
# hello claiming more is malformed, not a configuration we could have.
CONNECTION_INDEX_MAX: Final = 1024
_LABEL_ACCEPTOR: Final = b"partisan-handshake-acceptor-v1"
_LABEL_INITIATOR: Final = b"partisan-handshake-initiator-v1"


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"partisan-key-id" + key).digest()[:_KEY_ID_BYTES]


@final
@attrs.frozen
class Keyring:
    """The cluster secrets this node accepts; the first is the current one.

    Keys live in local configuration only, never in gossiped node specs.
    """

    keys: tuple[bytes, ...] = attrs.field(converter=tuple[bytes, ...])

    @keys.validator
    def _check(self, _attribute: object, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        if len(keys) > KEYRING_SIZE_MAX:
            raise ValueError(f"a keyring holds at most {KEYRING_SIZE_MAX} keys")
        for key in keys:
            if len(key) < 16:
                raise ValueError("cluster keys are bytes, at least 16 of them")

    @classmethod
    def from_secret(cls, secret: str | bytes) -> Keyring:
        """A keyring of one key; a str is UTF-8 encoded."""
        key = secret.encode() if isinstance(secret, str) else secret
        return cls(keys=(key,))

    def proofs(self, label: bytes, transcript: bytes) -> list[list[bytes]]:
        return [
            [_key_id(key), hmac.new(key, label + transcript, hashlib.sha256).digest()]
            for key in self.keys
        ]

    def verify(self, label: bytes, transcript: bytes, proofs: object) -> bool:
        if not isinstance(proofs, list) or len(proofs) > KEYRING_SIZE_MAX:
            return False
        by_id = {_key_id(key): key for key in self.keys}
        ok = False
        for proof in proofs:
            if not (isinstance(proof, list) and len(proof) == 2):
                return False
            key_id, mac = proof
            key = by_id.get(key_id) if isinstance(key_id, bytes) else None
            if key is None or not isinstance(mac, bytes):
                continue
            expected = hmac.new(key, label + transcript, hashlib.sha256).digest()
            ok |= hmac.compare_digest(expected, mac)
        return ok


class Role(enum.Enum):
    INITIATOR = "initiator"
    ACCEPTOR = "acceptor"


class _State(enum.Enum):
    START = enum.auto()
    SENT_HELLO = enum.auto()
    SENT_WELCOME = enum.auto()
    SENT_AUTH = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


@final
@attrs.frozen
class PeerIdentity:
    """Who is at the other end of an established connection."""

    node: str
    creation: int
    channel: str
    index: int
    version: int


@final
@attrs.frozen
class SendBody:
    """Effect: send this handshake body (the shell adds the frame header)."""

    body: bytes


@final
@attrs.frozen
class Established:
    """Effect: the handshake is done; data frames may flow."""

    peer: PeerIdentity


Effect = SendBody | Established


def _reject(reason: str) -> HandshakeError:
    error = HandshakeError(reason)
    error.reply = cbor2.dumps({"t": "reject", "reason": reason[:200]})
    return error


@final
class Handshake:
    """One side of one connection's handshake.

    Args:
        role: INITIATOR for the dialling side, ACCEPTOR for the listening side.
        node: our node name. creation: our incarnation.
        keyring: the cluster secrets we accept.
        nonce: ``NONCE_BYTES`` fresh random bytes (the shell passes
            ``secrets.token_bytes``; the simulator its seeded RNG).
        channel, index: (initiator) the channel and connection index we open.
        expected_peer: (initiator) the node we meant to dial; a different node
            answering is refused.
        channels: (acceptor) channel names we accept.
        versions: protocol versions we speak.
    """

    def __init__(
        self,
        *,
        role: Role,
        node: str,
        creation: int,
        keyring: Keyring,
        nonce: bytes,
        channel: str = "",
        index: int = 0,
        expected_peer: str | None = None,
        channels: frozenset[str] = frozenset(),
        versions: Sequence[int] = PROTOCOL_VERSIONS,
    ) -> None:
        assert len(nonce) == NONCE_BYTES
        self.role = role
        self._node = node
        self._creation = creation
        self._keyring = keyring
        self._nonce = nonce
        self._channel = channel
        self._index = index
        self._expected_peer = expected_peer
        self._channels = channels
        self._versions = tuple(versions)
        self._state = _State.START
        # Filled as the exchange proceeds; valid once state reaches DONE.
        self._peer: PeerIdentity | None = None
        self._peer_claim: str | None = None
        self._transcript = b""

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def peer_node(self) -> str | None:
        """The node the peer *claims* to be (unproven until ``done``), for logs."""
        return self._peer_claim

    def start(self) -> list[Effect]:
        """Initiator only: the Hello to send first."""
        assert self.role is Role.INITIATOR
        assert self._state is _State.START
        self._state = _State.SENT_HELLO
        hello = {
            "t": "hello",
            "versions": list(self._versions),
            "node": self._node,
            "creation": self._creation,
            "channel": self._channel,
            "index": self._index,
            "nonce": self._nonce,
        }
        return [SendBody(cbor2.dumps(hello))]

    def on_body(self, message: object) -> list[Effect]:
        """Feed one decoded handshake body (plain CBOR data).

        Raises:
            HandshakeError: the peer is refused; see ``reply``.
        """
        if self._state in (_State.DONE, _State.FAILED):
            raise HandshakeError(f"handshake message in state {self._state.name}")
        try:
            return self._dispatch(message)
        except HandshakeError:
            self._state = _State.FAILED
            raise

    def _dispatch(self, message: object) -> list[Effect]:
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            raise _reject("malformed handshake message")
        kind = message["t"]
        if kind == "reject":
            error = HandshakeError(f"peer refused us: {message.get('reason')!s:.200}")
            raise error
        match (self.role, self._state, kind):
            case (Role.ACCEPTOR, _State.START, "hello"):
                return self._on_hello(message)
            case (Role.INITIATOR, _State.SENT_HELLO, "welcome"):
                return self._on_welcome(message)
            case (Role.ACCEPTOR, _State.SENT_WELCOME, "auth"):
                return self._on_auth(message)
            case (Role.INITIATOR, _State.SENT_AUTH, "ready"):
                self._state = _State.DONE
                assert self._peer is not None
                return [Established(self._peer)]
        raise _reject(f"unexpected {kind!r} in state {self._state.name}")

    def _make_transcript(
        self,
        version: int,
        offered: list[int],
        initiator: tuple[str, int],
        acceptor: tuple[str, int],
        channel: str,
        index: int,
        nonce_i: bytes,
        nonce_a: bytes,
    ) -> bytes:
        # The versions the initiator offered are bound too: a man in the middle
        # who trims the hello's list to force an older version breaks the MACs.
        return cbor2.dumps(
            [version, offered, *initiator, *acceptor, channel, index, nonce_i, nonce_a]
        )

    def _on_hello(self, m: dict[object, object]) -> list[Effect]:
        versions, node, creation = m.get("versions"), m.get("node"), m.get("creation")
        channel, index, nonce = m.get("channel"), m.get("index"), m.get("nonce")
        if not (
            isinstance(versions, list)
            and 0 < len(versions) <= 16
            and all(_is_count(v) for v in versions)
            and isinstance(node, str)
            and _is_count(creation)
            and isinstance(channel, str)
            and _is_count(index)
            and isinstance(nonce, bytes)
            and len(nonce) == NONCE_BYTES
        ):
            raise _reject("malformed hello")
        assert isinstance(creation, int)
        assert isinstance(index, int)
        if index >= CONNECTION_INDEX_MAX:
            raise _reject("malformed hello")
        _check_node(node)
        self._peer_claim = node
        common = set(self._versions) & set(versions)
        if not common:
            raise _reject(
                f"no common protocol version (we speak {list(self._versions)}, "
                f"peer speaks {versions[:8]})"
            )
        if node == self._node:
            raise _reject("a node may not connect to itself")
        if channel not in self._channels:
            raise _reject(f"unknown channel {channel!r}")
        version = max(common)
        self._peer = PeerIdentity(
            node=node, creation=creation, channel=channel, index=index, version=version
        )
        self._transcript = self._make_transcript(
            version,
            versions,
            (node, creation),
            (self._node, self._creation),
            channel,
            index,
            nonce,
            self._nonce,
        )
        self._state = _State.SENT_WELCOME
        welcome = {
            "t": "welcome",
            "version": version,
            "node": self._node,
            "creation": self._creation,
            "nonce": self._nonce,
            "proofs": self._keyring.proofs(_LABEL_ACCEPTOR, self._transcript),
        }
        return [SendBody(cbor2.dumps(welcome))]

    def _on_welcome(self, m: dict[object, object]) -> list[Effect]:
        version, node, creation = m.get("version"), m.get("node"), m.get("creation")
        nonce = m.get("nonce")
        if not (
            _is_count(version)
            and isinstance(node, str)
            and _is_count(creation)
            and isinstance(nonce, bytes)
            and len(nonce) == NONCE_BYTES
        ):
            raise _reject("malformed welcome")
        assert isinstance(version, int)
        assert isinstance(creation, int)
        _check_node(node)
        self._peer_claim = node
        if version not in self._versions:
            raise _reject(f"peer chose version {version}, we speak {self._versions}")
        self._transcript = self._make_transcript(
            version,
            list(self._versions),
            (self._node, self._creation),
            (node, creation),
            self._channel,
            self._index,
            self._nonce,
            nonce,
        )
        if not self._keyring.verify(_LABEL_ACCEPTOR, self._transcript, m.get("proofs")):
            raise _reject("cluster secret mismatch (acceptor's proof refused)")
        if self._expected_peer is not None and node != self._expected_peer:
            raise _reject(f"expected node {self._expected_peer}, reached {node}")
        self._peer = PeerIdentity(
            node=node,
            creation=creation,
            channel=self._channel,
            index=self._index,
            version=version,
        )
        self._state = _State.SENT_AUTH
        auth = {
            "t": "auth",
            "proofs": self._keyring.proofs(_LABEL_INITIATOR, self._transcript),
        }
        return [SendBody(cbor2.dumps(auth))]

    def _on_auth(self, m: dict[object, object]) -> list[Effect]:
        if not self._keyring.verify(
            _LABEL_INITIATOR, self._transcript, m.get("proofs")
        ):
            raise _reject("cluster secret mismatch (initiator's proof refused)")
        self._state = _State.DONE
        assert self._peer is not None
        return [SendBody(cbor2.dumps({"t": "ready"})), Established(self._peer)]


def _is_count(value: object) -> bool:
    """An int >= 0 and not a bool (``isinstance(True, int)`` holds)."""
    return type(value) is int and value >= 0


def _check_node(node: str) -> None:
    try:
        validate_node_name(node)
    except BadReference:
        raise _reject(f"bad node name {node[:80]!r}") from None

"""PlumDB's exceptions.

As in the runtime (:mod:`runtime.errors`), errors a *peer* (or a damaged disk) can
cause derive from :class:`runtime.ProtocolError`: the driver logs them and drops
that message or exchange, and nothing else. Errors our *caller* causes are
``TypeError`` / ``ValueError`` raised at the call.
"""

from __future__ import annotations

from runtime.errors import ProtocolError

__all__ = ["ExchangeError", "ExchangeFailed", "MalformedData"]


class MalformedData(ProtocolError):
    """Bytes or plain data that do not decode to a valid key or object.

    Raised by the decoders (:func:`plumdb.decode_key`, :func:`plumdb.decode_object`,
    :func:`plumdb.object_from_plain`) on input from a peer or from storage. The
    message says what was wrong; nothing is half-applied.
    """


class ExchangeError(ProtocolError):
    """An anti-entropy peer broke the exchange protocol, or refused the exchange.

    The exchange that raised it is over (``failed``); the driver logs the reason
    and tries again later, perhaps with another peer.
    """


class ExchangeFailed(Exception):
    """An anti-entropy exchange this node started did not complete.

    Raised by :meth:`plumdb.PlumDB.exchange` (the scheduled exchanges only
    count and log it): the peer did not answer within ``exchange_timeout``,
    the connection refused the message, or the peer refused or broke the
    protocol (then ``__cause__`` is the :class:`ExchangeError`). What was
    repaired before the failure stays repaired; the next exchange resumes.

    Attributes:
        peer: the node the exchange was with.
        partition: the PlumDB partition compared.
        reason: why, in words.
    """

    def __init__(self, peer: str, partition: int, reason: str) -> None:
        super().__init__(f"exchange of partition {partition} with {peer}: {reason}")
        self.peer = peer
        self.partition = partition
        self.reason = reason

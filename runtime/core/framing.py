"""Frame splitting: a byte stream in, whole CBOR bodies out.

A frame is a 4-byte big-endian length followed by that many body bytes. The
decoder is sans-IO: the shell feeds it whatever ``receive_some`` returned and gets
back the bodies completed by those bytes, in order.

Invariants:
    * The size limit is checked on the header, before any body byte is buffered,
      so a hostile peer can make us hold at most ``frame_bytes_max + 3`` bytes
      (Partisan v6: "the frame size cap is enforced before a frame is assembled").
    * Any byte sequence yields bodies or :class:`FrameTooLarge`, nothing else
      (tests/runtime/core/test_framing.py checks it with hypothesis).
    * The limit may be raised between feeds (after the handshake), never mid-frame
      in a way that loses bytes: the buffer is kept as is.
"""

from __future__ import annotations

from typing import Final

from runtime.errors import FrameTooLarge

__all__ = ["FRAME_BYTES_MAX_DEFAULT", "HANDSHAKE_FRAME_BYTES_MAX", "FrameDecoder"]

# 16 MiB, as DESIGN.md's Frame limits: large enough for any message we mean to
# carry, small enough that one peer cannot exhaust memory with one frame.
FRAME_BYTES_MAX_DEFAULT: Final = 16 * 1024 * 1024
# Until a peer has proved it knows the cluster secret it may send only small frames:
# a hello is well under 1 KiB.
HANDSHAKE_FRAME_BYTES_MAX: Final = 4096
_HEADER: Final = 4


class FrameDecoder:
    """Splits a byte stream into frame bodies.

    Args:
        frame_bytes_max: the largest body accepted; larger raises FrameTooLarge.
    """

    __slots__ = ("_buffer", "frame_bytes_max")

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        assert frame_bytes_max > 0
        self.frame_bytes_max = frame_bytes_max
        # Bytes of an incomplete frame (header and/or part of a body). Invariant:
        # never holds a whole frame after feed() returns.
        self._buffer = bytearray()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add received bytes; return the bodies they complete, in order.

        Raises:
            FrameTooLarge: a header announced more than ``frame_bytes_max``. Its
                ``bodies`` holds the whole frames that came before the bad header
                in this feed, so the caller can deliver them (nothing accepted is
                lost). The decoder is then unusable; close the connection.
        """
        buffer = self._buffer
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data
        size_max = self.frame_bytes_max
        end_all = len(view)
        pos = 0
        bodies: list[bytes] = []
        while end_all - pos >= _HEADER:
            size = int.from_bytes(view[pos : pos + _HEADER], "big")
            if size > size_max:
                error = FrameTooLarge(
                    f"frame of {size} bytes exceeds the limit of {size_max}"
                )
                error.bodies = bodies
                raise error
            end = pos + _HEADER + size
            if end > end_all:
                break
            bodies.append(bytes(view[pos + _HEADER : end]))
            pos = end
        if buffer:
            del buffer[:pos]
        elif pos < end_all:
            buffer += view[pos:]
        return bodies

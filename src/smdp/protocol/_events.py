"""What makes a class an event of either port.

Events are small immutable values, as in h11: the server connection hands
them out, the client connection takes the same classes as commands, and both
sides compare them by value. One decorator says so for every event class of
both ports, so that the definition of an event is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

__all__ = ["BlockComplete", "BlockFailed", "event"]

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def event(cls: type[T]) -> type[T]:
    """A frozen dataclass with slots: immutable, compared by value, small."""
    return dataclass(frozen=True, slots=True)(cls)


@event
class BlockComplete:
    """A data block arrived whole: unstuffed, CRLF line ends, final CRLF kept.

    With ``stream_threshold`` set, :class:`~smdp.protocol.framing.BlockChunk`
    events came first and ``data`` is only the rest: the block is their
    ``data`` joined, then this. The application owes it an answer.
    """

    data: bytes


@event
class BlockFailed:
    """A data block was refused; the connection has already sent the error reply.

    ``reason`` says why (``framing.LINE_TOO_LONG_REASON``, ``TOO_BIG_REASON``,
    or a reason of the port's own). No answer is owed: the application only
    drops its transaction, and any ``BlockChunk`` data received for the block.
    """

    reason: str

"""The codecs' limits at their edges, where a mutation run found them loose:
a name's length on the user port, and which terminator ends a block when a
line ending in LF and one in CRLF both could (protocol.md 4)."""

from __future__ import annotations

import pytest

from smdp.protocol.framing import DataBlockReader, LineBuffer, ProtocolUsageError
from smdp.protocol.user import User
from smdp.protocol.user.grammar import write_command


def test_a_user_name_is_at_most_255_octets() -> None:
    assert write_command(User("a" * 255)) == "USER " + "a" * 255
    with pytest.raises(ProtocolUsageError):
        write_command(User("a" * 256))


def _block(wire: bytes) -> tuple[bytes, bytes]:
    """(the block, what is left after it) for ``wire`` fed at once."""
    lines = LineBuffer(1000)
    reader = DataBlockReader(1000, 10**6)
    lines.feed(wire)
    assert reader.consume(lines)
    rest = b""
    while (line := lines.next_line()) is not None:
        assert isinstance(line, bytes)
        rest += line + b"|"
    return reader.result(), rest


@pytest.mark.parametrize(("wire", "block", "rest"), [
    # The first terminator ends the block, whichever line end it has.
    (b"one\r\n.\r\ntwo\n.\nthree\r\n", b"one\r\n", b"two|.|three|"),
    (b"one\n.\ntwo\r\n.\r\nthree\r\n", b"one\r\n", b"two|.|three|"),
])
def test_the_first_terminator_ends_the_block(wire: bytes, block: bytes, rest: bytes) -> None:
    assert _block(wire) == (block, rest)

"""Message bodies that never have to be in memory whole.

A message may be 25 MiB or more (``limits.max_message_size``) and a server
holds many at once, so a body travels through the server as a :class:`Body`:
an immutable sequence of octets made of in-memory pieces and slices of an
anonymous temporary file. The wire codecs hand a block over in chunks, a
:class:`BodyWriter` collects them (in memory while small, in a temporary file
once past :data:`SPOOL_THRESHOLD`), and the store writes and reads bodies a
chunk of :data:`CHUNK_SIZE` at a time. Whatever the message size, the server
then holds a few chunks of it, never all of it.

Temporary files are unlinked at creation (``tempfile.TemporaryFile``), so a
crash leaves nothing behind; they only ever hold a body that is not stored
yet, and nothing is acknowledged before the store has it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from itertools import count
from typing import IO, Final

__all__ = ["CHUNK_SIZE", "SPOOL_THRESHOLD", "Body", "BodyWriter", "stored_chunks"]

#: How much of a body is read, written or sent at a time.
CHUNK_SIZE: Final = 256 * 1024
#: Bodies up to this size stay in memory; larger ones go to a temporary file.
SPOOL_THRESHOLD: Final = 1024 * 1024


class _FileSlice:
    """Octets ``start`` to ``end`` of an open temporary file."""

    __slots__ = ("end", "file", "start")

    def __init__(self, file: IO[bytes], start: int, end: int) -> None:
        self.file = file
        self.start = start
        self.end = end

    def __len__(self) -> int:
        return self.end - self.start

    def read(self, start: int, end: int) -> bytes:
        """Octets ``start`` to ``end`` of this slice (relative offsets)."""
        # pread keeps no file position, so several readers can share one file.
        return os.pread(self.file.fileno(), end - start, self.start + start)


_Part = bytes | _FileSlice


class Body:
    """An immutable sequence of octets, in memory or (partly) in a file.

    Build one with :meth:`of` (bytes), a :class:`BodyWriter`, or
    :meth:`prefixed` / :meth:`tail` from another body. Reading never changes
    it, so a body can be read any number of times.
    """

    __slots__ = ("_parts", "no_bare_lf", "size")

    def __init__(self, parts: Iterable[_Part] = (), *, no_bare_lf: bool = False) -> None:
        self._parts: tuple[_Part, ...] = tuple(p for p in parts if len(p))
        self.size: int = sum(len(p) for p in self._parts)
        #: Every LF in the body ends a CRLF, as the ports' data readers give
        #: it: a reader of its line ends need not look for a bare LF. A hint
        #: for speed only (issue 15 item 4): False says nothing.
        self.no_bare_lf = no_bare_lf

    @classmethod
    def of(cls, data: bytes, *, no_bare_lf: bool = False) -> Body:
        return cls((bytes(data),), no_bare_lf=no_bare_lf)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        where = "memory" if self.in_memory else "file"
        return f"<Body {self.size} octets in {where}>"

    @property
    def in_memory(self) -> bool:
        return all(isinstance(p, bytes) for p in self._parts)

    def chunks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The body in pieces of at most ``size`` octets (the last may be shorter).

        In-memory pieces are cut, never joined, so chunks may also be shorter
        where two pieces meet; nothing else may be assumed about their bounds.
        """
        for piece in self.views(size):
            yield piece if isinstance(piece, bytes) else bytes(piece)

    def views(self, size: int = CHUNK_SIZE) -> Iterator[bytes | memoryview]:
        """:meth:`chunks`, but the in-memory pieces as views, not copies: for
        a consumer that only reads them at once (a store's INSERT)."""
        if size <= 0:
            raise ValueError("chunk size must be positive")
        for part in self._parts:
            if isinstance(part, bytes):
                if len(part) <= size:
                    yield part
                else:
                    view = memoryview(part)
                    for start in range(0, len(part), size):
                        yield view[start : start + size]
            else:
                for start in range(0, len(part), size):
                    yield part.read(start, min(start + size, len(part)))

    def head(self, n: int) -> bytes:
        """The first ``n`` octets (fewer if the body is shorter)."""
        out: list[bytes] = []
        left = n
        for part in self._parts:
            if left <= 0:
                break
            piece = part[:left] if isinstance(part, bytes) else part.read(0, min(left, len(part)))
            out.append(piece)
            left -= len(piece)
        return b"".join(out)

    def read(self) -> bytes:
        """The whole body as one bytes object: only for bodies known to be small."""
        if len(self._parts) == 1 and isinstance(self._parts[0], bytes):
            return self._parts[0]  # immutable: handed out as it is, not copied
        return b"".join(self.chunks())

    def tail(self, start: int) -> Body:
        """The body from octet ``start`` on (no copy of the octets)."""
        parts: list[_Part] = []
        skip = start
        for part in self._parts:
            if skip >= len(part):
                skip -= len(part)
                continue
            if skip:
                if isinstance(part, bytes):
                    part = part[skip:]
                else:
                    part = _FileSlice(part.file, part.start + skip, part.end)
                skip = 0
            parts.append(part)
        return Body(parts)

    def prefixed(self, head: bytes) -> Body:
        """``head`` followed by this body (no copy of this body's octets)."""
        return Body((head, *self._parts))

    def startswith(self, prefix: bytes) -> bool:
        return self.head(len(prefix)) == prefix


class BodyWriter:
    """Collects a body chunk by chunk; :meth:`finish` gives the :class:`Body`.

    Chunks stay in memory until their total passes ``threshold``; then they
    move to an anonymous temporary file in ``directory`` (the system's temporary
    directory when None). A full disk surfaces as ``OSError`` from
    :meth:`write`; the caller refuses the message and calls :meth:`discard`.
    """

    __slots__ = ("_directory", "_file", "_memory", "_threshold", "size")

    def __init__(self, *, threshold: int = SPOOL_THRESHOLD, directory: str | None = None) -> None:
        self._threshold = threshold
        self._directory = directory
        self._memory: list[bytes] = []
        self._file: IO[bytes] | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._file is None and self.size + len(data) > self._threshold:
            self._file = tempfile.TemporaryFile(dir=self._directory)  # noqa: SIM115 - owned by the Body
            for piece in self._memory:
                self._file.write(piece)
            self._memory.clear()
        if self._file is not None:
            self._file.write(data)
        else:
            self._memory.append(bytes(data))
        self.size += len(data)

    def finish(self, *, no_bare_lf: bool = False) -> Body:
        """The body written so far; the writer must not be used afterwards.
        ``no_bare_lf``: the writer knows that every LF written ends a CRLF."""
        if self._file is None:
            body = Body((b"".join(self._memory),), no_bare_lf=no_bare_lf)
            self._memory.clear()
            return body
        self._file.flush()
        return Body((_FileSlice(self._file, 0, self.size),), no_bare_lf=no_bare_lf)

    def discard(self) -> None:
        """Drop what was written (the temporary file is closed and so removed)."""
        self._memory.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
        self.size = 0


def stored_chunks(read_chunk: Callable[[int], bytes | None]) -> Iterator[bytes]:
    """A stored body, chunk by chunk: ``read_chunk(seq)`` for seq = 0, 1, 2 ...
    (``Store.out_body_chunk`` / ``in_body_chunk`` bound to one body) until it
    gives None. Lazy: one chunk is read, and held, at a time."""
    for seq in count():
        chunk = read_chunk(seq)
        if chunk is None:
            return
        yield chunk

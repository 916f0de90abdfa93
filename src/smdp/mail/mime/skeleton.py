"""The skeleton of a message: what the MIME reader looks at, read a chunk at a time.

A message held as a :class:`~smdp.mail.body.Body` (25 MiB in a temporary
file, say) is never read whole. Its chunks pass through a filter that keeps
what :func:`~smdp.mail.mime.walk.walk_message` and
:func:`~smdp.mail.mime.text.part_lines` look at and drops the rest; they then
run on that skeleton, a few KiB for a message of text and attachments
whatever its size, and find the same. Kept:

- the mbox "From " line (as mbox_line_end finds it) and the top header block;
- every "--" line that may be a delimiter, with the line end before it, and
  the header block after it (up to the blank line or the first line that is
  not a field, exactly where scan_header ends it), unless the line can only
  be a closing delimiter (no part follows one). A "--" line may be a
  delimiter when it is one of a boundary that some multipart header declared
  before it, or of a boundary the walk could guess (any "--" line in the
  first GUESS_WINDOW octets of a multipart body gives one): the walk takes no
  other. Other "--" lines (signatures, diffs, SQL) are content; outside
  windows they cost one bytes.find per boundary and chunk;
- after a header block whose body the walk may read (text/plain or
  text/html that is not an attachment; multipart, for its preamble; no or an
  invalid Content-Type), a window: the body's first _TEXT_WINDOW octets,
  more than part_lines ever decodes. Other bodies (attachments) are dropped.

Within a window everything is kept, so a text part's prefix is whole and
contiguous. A window ends early only where its part is certainly over: at a
delimiter of the boundary that opened the part (the only boundary that the
opening line delimits), or, for a multipart, when the first possible
delimiter after its header is one of its own boundary only (the walk then
finds a delimiter and never reads the preamble). Between kept pieces only
whole lines are dropped, except at the end of a window, where the next kept
octet is the line end before a delimiter. So every delimiter, part header and
text prefix that the walk reads is in the same place relative to the others
as in the message, and what it finds is the same.

Bounds: a "--" line or part header line outside a window is cut to _LINE_CAP
octets plus its line end (a top header line to MAX_HEADER_OCTETS; the top
header stops past MAX_HEADER_OCTETS, as the walk does). Past SKELETON_CAP
octets of skeleton or MAX_DASH_LINES possible delimiters nothing more is
read, since nothing more is kept: on hostile input only (a message made of
"--x" lines, or of dozens of inline text parts of 256 KiB) the attachment
count and names may then be short of what the bytes give. Past
_MAX_BOUNDARIES boundaries every "--" line counts as a possible delimiter and
no window ends early: only more is kept.

The filter is a state machine (:class:`_State`), one method a state. A
method runs until its state changes or the buffer runs out (a header block is
one call, not one a line), so dispatching costs a dictionary look-up per
state change, never per octet or per line.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from smdp.mail.mime.headers import (
    FIELD_NAME,
    MBOX_DECIDED,
    first_values,
    mbox_line_end,
    scan_header,
)
from smdp.mail.mime.text import HTML_STEPS, TEXT_STEPS
from smdp.mail.mime.walk import GUESS_WINDOW, MAX_HEADER_OCTETS, MIME_FIELDS, body_use

__all__ = ["MAX_DASH_LINES", "SKELETON_CAP", "message_skeleton"]

# The longest prefix of a text part that part_lines decodes, with room for
# the line end that may follow a window (the part is then still longer than
# the last step, so it is not taken as complete).
_TEXT_WINDOW = max(TEXT_STEPS[-1], HTML_STEPS[-1]) + 64
# Longest "--" line or part header line kept whole outside a window.
_LINE_CAP = 64 * 1024
# Largest skeleton, and most possible delimiters; past either nothing more is read.
SKELETON_CAP = 4 * 1024 * 1024
MAX_DASH_LINES = 10_000
# Boundaries searched for, and windows that may end early, at most.
_MAX_BOUNDARIES = 64
_MAX_WINDOWS = 16
# "-" octets that start no "--" line after which the rest of a buffer is
# searched for "\n--" and "\r--" (bytes.find, about 1.5 GB/s) rather than for
# "-" (memchr, much faster, but one Python step per hit).
_FAST_MISSES = 32

_NEED = -1  # _line: the line end is not in the buffer yet
_LONG = -2  # _line: no line end yet and the line is over its cap


def message_skeleton(chunks: Iterable[bytes]) -> bytes:
    """The skeleton of the message made of ``chunks`` (see above)."""
    kept = _Skeleton()
    for chunk in chunks:
        kept.feed(chunk)
        if kept.done:
            break
    return kept.finish()


def _line_break(buf: bytes, start: int) -> int:
    """Where the first CR or LF at or after ``start`` is, or -1 (two memchr calls)."""
    lf = buf.find(b"\n", start)
    cr = buf.find(b"\r", start) if lf < 0 else buf.find(b"\r", start, lf)
    return cr if cr >= 0 else lf


def _line(buf: bytes, start: int, eof: bool, cap: int) -> tuple[int, int]:
    """(line end, next line start) of the line at ``start``, or (_NEED or _LONG, 0).

    Line ends are CRLF, LF or a bare CR, as scan_header reads them.
    """
    size = len(buf)
    end = _line_break(buf, start)
    if end >= 0:
        if buf[end] == 0x0A:
            return end, end + 1
        if end + 1 < size:
            return end, end + (2 if buf[end + 1] == 0x0A else 1)
        if eof:
            return end, end + 1
        # A CR that ends the buffer: an LF may follow.
        return (_LONG if end - start > cap else _NEED), 0
    if eof:
        return size, size
    return (_LONG if size - start > cap else _NEED), 0


class _Kept:
    """The octets kept so far: pieces in ``out``, and a run not copied out yet.

    Adjacent pieces of one buffer are joined into the run, so a window or a
    header block is copied once, not a line at a time.
    """

    __slots__ = ("capped", "out", "run_buf", "run_end", "run_start", "size")

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.size = 0  # octets kept, the run included
        self.capped = False  # SKELETON_CAP reached (or the filter gave up): keep no more
        self.run_buf: bytes | None = None  # the run is run_buf[run_start:run_end]
        self.run_start = self.run_end = 0

    def keep(self, buf: bytes, start: int, end: int) -> None:
        """Keep ``buf[start:end]``."""
        if end <= start or self.capped:
            return
        if self.size + end - start > SKELETON_CAP:
            end = start + SKELETON_CAP - self.size
            self.capped = True  # the state machine stops at its next step
        if self.run_buf is buf and self.run_end == start:
            self.run_end = end
        else:
            self.flush()
            self.run_buf, self.run_start, self.run_end = buf, start, end
        self.size += end - start

    def flush(self) -> None:
        if self.run_buf is not None:
            self.out.append(self.run_buf[self.run_start : self.run_end])
            self.run_buf = None

    def mark(self) -> int:
        """Where in ``out`` what is kept next starts."""
        self.flush()
        return len(self.out)

    def since(self, mark: int) -> bytes:
        """What was kept since ``mark``."""
        self.flush()
        return b"".join(self.out[mark:])

    def result(self) -> bytes:
        """Everything kept, which the filter then lets go of."""
        self.flush()
        kept = b"".join(self.out)
        self.out = []
        if self.capped:
            # Not a partial line at the end: a cut "--boundaryX" would read as a delimiter.
            cut = max(kept.rfind(b"\n"), kept.rfind(b"\r"))
            kept = kept[: cut + 1]
        return kept


@dataclass(slots=True)
class _Window:
    until: int  # octets before this offset of the message are kept
    ends_at: bytes | None  # it ends at a delimiter of this boundary
    own: bytes  # a multipart's boundary
    first: bool  # no possible delimiter seen since it opened


class _Windows:
    """The body windows: octets before ``until`` (an offset in the message) are kept.

    ``fixed_until`` is the same for the windows that cannot end early;
    ``ending`` holds the others.
    """

    __slots__ = ("ending", "fixed_until", "until")

    def __init__(self) -> None:
        self.until = 0
        self.fixed_until = 0
        self.ending: list[_Window] = []

    def fix(self) -> None:
        """From now on no window ends early (delimiters are no longer told apart)."""
        self.fixed_until = self.until
        self.ending = []

    def at_delimiter(self, found: set[bytes] | None, at: int) -> None:
        """A possible delimiter of the boundaries ``found`` (None: of any) is at ``at``."""
        if found is None:
            for window in self.ending:
                window.first = False  # it might have been anyone's delimiter
            return
        if not self.ending:
            return
        ending = []
        for window in self.ending:
            if window.until <= at:
                continue  # over: no longer matters
            if (window.ends_at is not None and window.ends_at in found) or (
                window.first and window.own and found == {window.own}
            ):
                continue  # the part (or the multipart's preamble) is over
            window.first = False
            ending.append(window)
        self.ending = ending
        self.until = max([self.fixed_until, *(w.until for w in ending)])


class _Boundaries:
    """The boundaries whose delimiter lines are searched for, and the searches of
    the buffer being filtered (reset by :meth:`new_buffer`)."""

    __slots__ = (
        "exact", "guess_until", "hold", "misses", "needles", "next_cr", "next_known",
        "next_lf", "not_delimiters",
    )

    def __init__(self) -> None:
        self.exact = True  # False: every "--" line is one (too many boundaries)
        self.needles: dict[bytes, bytes] = {}  # boundary: "--" + boundary
        self.hold = 2  # octets held back at the end of a buffer
        self.guess_until = 0  # "--" lines before this offset give boundaries
        # Finds cached for the buffer (-2: not searched, -1: none).
        self.misses = 0
        self.next_lf = self.next_cr = -2
        self.next_known: dict[bytes, int] = {}
        self.not_delimiters = 0

    def new_buffer(self) -> None:
        self.misses = 0
        self.next_lf = self.next_cr = -2
        self.next_known.clear()
        self.not_delimiters = 0

    def add(self, boundary: bytes) -> bool:
        """Search for ``boundary`` too; True when that makes the search inexact."""
        if not self.exact or boundary in self.needles:
            return False
        if len(self.needles) >= _MAX_BOUNDARIES or boundary[-1] in b" \t":
            # Too many to search for, or one _Skeleton._delimiters could miss.
            self.exact = False
            self.hold = 2
            return True
        self.needles[boundary] = b"--" + boundary
        self.hold = max(self.hold, len(boundary) + 3)
        return False

    def next_candidate(self, buf: bytes, pos: int, base: int) -> int:
        """The line end before the next "--" line to look at, at or after ``pos``; or -1.

        Any "--" line (the DASH state passes over those that cannot be
        delimiters) until _FAST_MISSES of them were not in this buffer; then
        only lines that start with "--" and a boundary, except where a "--"
        line may give a boundary (near the start of a multipart body).
        ``base`` is the offset of ``buf`` in the message.
        """
        if not self.exact:
            return self._next_dash(buf, pos)
        guess = base + pos < self.guess_until
        if not guess and not self.needles:
            return -1  # no boundary yet: no "--" line can be a delimiter
        if guess or self.not_delimiters < _FAST_MISSES:
            return self._next_dash(buf, pos)
        return self._next_known(buf, pos)

    def _next_dash(self, buf: bytes, pos: int) -> int:
        """The line end before the next line that starts with "--", at or after ``pos``.

        -1 when there is none in ``buf`` (a "-" ending it may start one).
        Searching for "-" is a memchr, so a base64 body costs one call per
        chunk; after _FAST_MISSES "-" that start no "--" line (text, binary)
        the rest of the buffer is searched for "\\n--" and "\\r--" instead.
        """
        size = len(buf)
        if self.misses < _FAST_MISSES:
            dash = buf.find(b"-", pos + 1)
            while True:
                if dash < 0 or dash + 1 >= size:
                    return -1
                if buf[dash + 1] == 0x2D and buf[dash - 1] in (0x0A, 0x0D):
                    return dash - 1
                self.misses += 1
                if self.misses >= _FAST_MISSES:
                    break
                dash = buf.find(b"-", dash + 1)
            pos = max(pos, dash)  # no "--" line starts before this "-"
        if self.next_lf != -1 and self.next_lf < pos:
            self.next_lf = buf.find(b"\n--", pos)
        if self.next_cr != -1 and self.next_cr < pos:
            self.next_cr = buf.find(b"\r--", pos)
        lf, cr = self.next_lf, self.next_cr
        return lf if cr < 0 else cr if lf < 0 else min(lf, cr)

    def _next_known(self, buf: bytes, pos: int) -> int:
        """The line end before the next line that starts with "--" and a boundary."""
        best = -1
        for boundary, needle in self.needles.items():
            brk = self.next_known.get(boundary, -2)
            if brk != -1 and brk < pos:
                at = buf.find(needle, pos + 1)
                while at > 0 and buf[at - 1] not in (0x0A, 0x0D):
                    at = buf.find(needle, at + 1)
                brk = at - 1 if at > 0 else -1
                self.next_known[boundary] = brk
            if brk >= 0 and (best < 0 or brk < best):
                best = brk
        return best


class _State(enum.Enum):
    """Where the filter is; _STEPS gives the method that goes on from there."""

    MBOX = enum.auto()  # the start: is there an mbox "From " line?
    HEADER = enum.auto()  # at a line of a header block (top or part)
    DASH = enum.auto()  # at a "--" line (after the line end before it, with dash_break)
    REGION = enum.auto()  # in a body: keep the windows, look for the next possible delimiter
    SKIP = enum.auto()  # dropping the rest of an over-long kept line, up to its line end
    TRUNCATED = enum.auto()  # the top header passed MAX_HEADER_OCTETS: one more octet, done
    DONE = enum.auto()

    # Members are singletons, so hashing by identity is right, and a C call
    # rather than Enum's Python-level hash of the name: _STEPS is looked up
    # at every state change, a few times a "--" line at worst.
    __hash__ = object.__hash__


class _Skeleton:
    """The filter described above: :meth:`feed` it chunks, then :meth:`finish`.

    Each state's method takes the buffer, the position in it and whether it
    is the end of the message, and returns the position it got to. It either
    moves to another state, or stays in its own state when it needs more of
    the message than the buffer holds: the octets from the position it
    returns on are then carried into the next buffer.
    """

    def __init__(self) -> None:
        self.state = _State.MBOX
        self.done = False  # the DONE state was reached: no more input is wanted
        self.kept = _Kept()
        self.windows = _Windows()
        self.boundaries = _Boundaries()
        self.carry = b""  # octets not processed yet
        self.base = 0  # offset in the message of the buffer being processed
        self.opener: bytes | None = None  # the one boundary the last delimiter is of
        self.dash_lines = 0
        self.dash_break = False  # DASH: at the line end before the "--" line
        self.at_line_start = False  # REGION: at the start of a line
        # HEADER: the block being read.
        self.top = True
        self.header_mark = 0  # where in kept the block starts
        self.header_start = 0  # kept.size when the top header started
        self.seen_field = False
        # SKIP: the state the over-long line was in.
        self.after_skip = _State.HEADER

    def feed(self, chunk: bytes, *, eof: bool = False) -> None:
        if self.done:
            return
        buf = self.carry + chunk if self.carry else chunk
        used = self._run(buf, eof)
        self.kept.flush()
        self.base += used
        self.carry = buf[used:]

    def finish(self) -> bytes:
        self.feed(b"", eof=True)
        return self.kept.result()

    def _run(self, buf: bytes, eof: bool) -> int:
        """Process ``buf``; return how many octets are done with (the rest is carried)."""
        self.boundaries.new_buffer()
        pos = 0
        while True:
            state = self.state
            pos = _STEPS[state](self, buf, pos, eof)
            if self.kept.capped:
                self.state = _State.DONE
                self.done = True
                return len(buf)
            if self.state is state:
                return pos

    # -- keeping

    def _window(self, buf: bytes, start: int, end: int) -> None:
        """Keep what of ``buf[start:end]`` is in a window."""
        self.kept.keep(buf, start, min(end, self.windows.until - self.base))

    def _keep_line(self, buf: bytes, start: int, end: int, term: int, cap: int) -> None:
        """Keep a line: its first ``cap`` octets, the rest in a window, its line end."""
        cut = min(end, start + cap)
        self.kept.keep(buf, start, cut)
        self._window(buf, cut, end)
        self.kept.keep(buf, end, term)

    # -- boundaries and windows

    def _add_boundary(self, boundary: bytes) -> None:
        if self.boundaries.add(boundary):
            self.windows.fix()

    def _delimiters(self, line: bytes | None, at: int) -> set[bytes] | None:
        """The boundaries ``line`` (None: cut) at offset ``at`` is a delimiter of.

        None when unknown (every "--" line is then a possible delimiter). A
        delimiter as the walk reads it: "--", the boundary, "--" if it
        closes, blanks. A "--" line near the start of a multipart body first
        adds the boundary the walk would guess from it.
        """
        boundaries = self.boundaries
        if not boundaries.exact or line is None:
            return None
        rest = line[2:].rstrip(b" \t")
        if at < boundaries.guess_until and rest and 0x21 <= rest[0] <= 0x7E and len(rest) <= 200:
            guess = rest[:-2] if rest.endswith(b"--") else rest
            if guess:
                self._add_boundary(guess)
                if not boundaries.exact:
                    return None
        found = {rest} if rest in boundaries.needles else set()
        if rest.endswith(b"--") and rest[:-2] in boundaries.needles:
            found.add(rest[:-2])
        return found

    def _delimiter(self, found: set[bytes] | None, at: int) -> None:
        """A possible delimiter starts at offset ``at``; ``found`` as from _delimiters."""
        self.dash_lines += 1
        if self.dash_lines > MAX_DASH_LINES:
            self.kept.capped = True
            return
        self.opener = next(iter(found)) if found and len(found) == 1 else None
        self.windows.at_delimiter(found, at)

    def _start_header(self, top: bool) -> None:
        self.state = _State.HEADER
        self.top = top
        self.seen_field = False
        self.header_mark = self.kept.mark()
        self.header_start = self.kept.size

    def _header_full(self) -> bool:
        # scan_header(limit=MAX_HEADER_OCTETS) gives up on the top header once
        # a line ends past the limit and anything follows, and so does the walk.
        if self.top and self.kept.size - self.header_start >= MAX_HEADER_OCTETS:
            self.state = _State.TRUNCATED
            return True
        return False

    def _end_header(self, region_start: int) -> None:
        """The header block ended; its body starts at ``buf[region_start]``."""
        block = self.kept.since(self.header_mark)
        reads, multipart, boundary = body_use(
            first_values(scan_header(block, keep=MIME_FIELDS).fields))
        self.top = False
        self.state = _State.REGION
        self.at_line_start = True
        if not reads:
            return
        start = self.base + region_start
        until = start + _TEXT_WINDOW
        windows = self.windows
        windows.until = max(windows.until, until)
        if multipart:
            self.boundaries.guess_until = max(self.boundaries.guess_until, start + GUESS_WINDOW)
            if boundary:
                self._add_boundary(boundary)
        own = boundary if boundary != self.opener else b""
        if (self.boundaries.exact and len(windows.ending) < _MAX_WINDOWS
                and (own or self.opener)):
            windows.ending.append(_Window(until, self.opener, own, True))
        else:
            windows.fixed_until = max(windows.fixed_until, until)

    def _skip(self, then: _State) -> None:
        """Drop the rest of the line, then go on as after the line in state ``then``."""
        self.state = _State.SKIP
        self.after_skip = then

    # -- the states

    def _at_start(self, buf: bytes, pos: int, eof: bool) -> int:
        # The first MBOX_DECIDED octets decide, and the buffer holds them (or
        # the whole message): the walk finds the same line in the skeleton.
        if len(buf) - pos < MBOX_DECIDED and not eof:
            return pos
        skip = mbox_line_end(buf[pos : pos + MBOX_DECIDED])
        self.kept.keep(buf, pos, pos + skip)
        self._start_header(top=True)
        return pos + skip

    def _in_header(self, buf: bytes, pos: int, eof: bool) -> int:
        size = len(buf)
        cap = MAX_HEADER_OCTETS if self.top else _LINE_CAP
        kept = self.kept
        while not kept.capped:
            if pos >= size and eof:
                self._end_header(pos)
                return pos
            end, term = _line(buf, pos, eof, cap)
            if end == _NEED:
                return pos
            if end == pos:  # the blank line
                kept.keep(buf, pos, term)
                self._end_header(term)
                return term
            if buf[pos] in (0x20, 0x09):
                field_line = self.seen_field
            else:
                line_end = size if end == _LONG else end
                field_line = FIELD_NAME.match(buf, pos, line_end) is not None
                self.seen_field = self.seen_field or field_line
            if not field_line:
                self._end_header(pos)  # this line is the body's first
                return pos
            if end == _LONG:
                kept.keep(buf, pos, pos + cap)
                self._skip(_State.HEADER)
                return pos + cap
            self._keep_line(buf, pos, end, term, cap)
            pos = term
            if self._header_full():
                return pos
        return pos

    def _in_body(self, buf: bytes, pos: int, eof: bool) -> int:
        size = len(buf)
        if self.at_line_start:
            if pos >= size:
                return pos
            if buf[pos] == 0x2D:  # "-"
                if pos + 1 >= size:
                    if not eof:
                        return pos
                elif buf[pos + 1] == 0x2D:
                    self.state, self.dash_break = _State.DASH, False
                    return pos
            self.at_line_start = False
        brk = self.boundaries.next_candidate(buf, pos, self.base)
        if brk < 0:
            # Hold back what may be the start of a delimiter line.
            stop = size if eof else max(pos, size - self.boundaries.hold)
            self._window(buf, pos, stop)
            return stop
        self._window(buf, pos, brk)
        self.state, self.dash_break = _State.DASH, True
        return brk

    def _at_dash_line(self, buf: bytes, pos: int, eof: bool) -> int:
        start = pos + self.dash_break
        end, term = _line(buf, start, eof, _LINE_CAP)
        if end == _NEED:
            return pos
        line = None if end == _LONG else buf[start:end]
        found = self._delimiters(line, self.base + start)
        if found is not None and not found:
            # Not a delimiter of anything: content.
            self.boundaries.not_delimiters += 1
            self._window(buf, pos, term)
            self.state, self.at_line_start = _State.REGION, True
            return term
        self.kept.keep(buf, pos, start)  # the line end before it
        self._delimiter(found, self.base + start)
        if found and line is not None and line[2:].rstrip(b" \t") not in found:
            # Only ever a closing delimiter: no part follows it.
            self.kept.keep(buf, start, term)
            self.state, self.at_line_start = _State.REGION, True
            return term
        if end == _LONG:
            self.kept.keep(buf, start, start + _LINE_CAP)
            self._skip(_State.DASH)
            return start + _LINE_CAP
        self._keep_line(buf, start, end, term, _LINE_CAP)
        self._start_header(top=False)
        return term

    def _skipping(self, buf: bytes, pos: int, eof: bool) -> int:
        size = len(buf)
        end = _line_break(buf, pos)
        term = end + 1
        if end >= 0 and buf[end] == 0x0D:
            if end + 1 < size:
                term += buf[end + 1] == 0x0A
            elif not eof:
                self._window(buf, pos, end)
                return end  # is the CR followed by an LF?
        if end < 0:
            self._window(buf, pos, size)
            return size
        self._window(buf, pos, end)
        self.kept.keep(buf, end, term)
        after = self.after_skip
        if after is _State.DASH:
            self._start_header(top=False)
        else:
            self.state = _State.HEADER
            self._header_full()
        return term

    def _truncated(self, buf: bytes, pos: int, eof: bool) -> int:
        if pos < len(buf):
            self.kept.keep(buf, pos, pos + 1)
            self.state = _State.DONE
        elif eof:
            self.state = _State.DONE
        return pos

    def _done(self, buf: bytes, pos: int, eof: bool) -> int:
        self.done = True
        return len(buf)


_STEPS: dict[_State, Callable[[_Skeleton, bytes, int, bool], int]] = {
    _State.MBOX: _Skeleton._at_start,
    _State.HEADER: _Skeleton._in_header,
    _State.DASH: _Skeleton._at_dash_line,
    _State.REGION: _Skeleton._in_body,
    _State.SKIP: _Skeleton._skipping,
    _State.TRUNCATED: _Skeleton._truncated,
    _State.DONE: _Skeleton._done,
}

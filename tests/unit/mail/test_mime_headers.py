"""Header scanning (smdp.mail.mime.headers), shared by the envelope and submission."""

from __future__ import annotations

import random

from smdp.mail.mime.headers import (
    _LINE_BREAK,
    FIELD_NAME,
    MAX_MBOX_LINE,
    HeaderBlock,
    HeaderField,
    first_values,
    mbox_line_end,
    scan_header,
)


def test_scan_header_unfolds_and_keeps_offsets() -> None:
    data = b"Subject: one\r\n two\r\nX-A:b\nTo: c\r\rbody"
    block = scan_header(data)
    assert [(f.name, f.value) for f in block.fields] == [
        ("Subject", b"one two"),
        ("X-A", b"b"),
        ("To", b"c"),
    ]
    assert data[block.fields[0].start : block.fields[0].end] == b"Subject: one\r\n two\r\n"
    assert block.separator and data[block.body_start :] == b"body"


def test_scan_header_stops_at_non_header_line() -> None:
    data = b"Subject: x\r\nnot a header\r\nFrom: evil@x\r\n\r\n"
    block = scan_header(data)
    assert [f.key for f in block.fields] == ["subject"]
    assert not block.separator
    assert block.end == block.body_start == data.index(b"not a header")


def test_scan_header_first_line_continuation_is_body() -> None:
    block = scan_header(b" folded\r\nFrom: x@y\r\n\r\nbody")
    assert block.fields == () and block.body_start == 0


def test_scan_header_keep_and_limit() -> None:
    data = b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert [f.name for f in scan_header(data, keep=frozenset({"b"})).fields] == ["B"]
    truncated = scan_header(data, limit=7)
    assert truncated.truncated and [f.name for f in truncated.fields] == ["A", "B"]
    assert not scan_header(data, limit=len(data)).truncated


def test_scan_header_accepts_blank_before_colon() -> None:
    # Obsolete syntax, but some readers take it: it must be seen (assumption 3).
    assert scan_header(b"From : x@y\r\n\r\n").fields[0].key == "from"


def test_first_values_keeps_the_first_field_of_each_name() -> None:
    block = scan_header(b"To: a\r\nSubject: s\r\nto: b\r\n\r\n")
    assert first_values(block.fields) == {"to": b"a", "subject": b"s"}


# ---------------------------------------------------------------------------
# The fast path against its plain definition: it must give exactly what the
# straightforward code (the first version's) gives, on random input built to
# hit the edge cases (mixed line ends, folding, limits, cut points).


def _scan_header_by_lines(
    data: bytes,
    start: int = 0,
    end: int | None = None,
    *,
    keep: frozenset[str] | None = None,
    limit: int | None = None,
) -> HeaderBlock:
    """scan_header as first written: one Python step a line."""
    stop = len(data) if end is None else end
    give_up = stop if limit is None else min(stop, start + limit)
    fields: list[HeaderField] = []
    pos, name, field_start, parts, wanted = start, None, 0, [], False

    def flush(field_end: int) -> None:
        if name is not None and wanted:
            value = b"".join(parts).strip(b" \t")
            fields.append(HeaderField(name, value, field_start, field_end))

    while pos < stop:
        match = _LINE_BREAK.search(data, pos, stop)
        if match is None:
            line_end = next_pos = stop
        else:
            line_end = match.start()
            next_pos = line_end + 1
            if data[line_end] == 0x0D and next_pos < stop and data[next_pos] == 0x0A:
                next_pos += 1
        if line_end == pos:
            flush(pos)
            return HeaderBlock(tuple(fields), pos, next_pos, True)
        if data[pos] in (0x20, 0x09):
            if name is None:
                break
            if wanted:
                parts.append(data[pos:line_end])
        else:
            field = FIELD_NAME.match(data, pos, line_end)
            if field is None:
                break
            flush(pos)
            name = field.group(1).decode("ascii")
            wanted = keep is None or name.lower() in keep
            field_start = pos
            parts = [data[field.end() : line_end]] if wanted else []
        pos = next_pos
        if pos >= give_up and pos < stop:
            flush(pos)
            return HeaderBlock(tuple(fields), pos, pos, False, truncated=True)
    flush(pos)
    return HeaderBlock(tuple(fields), pos, pos, False)


_HEADER_ATOMS = [
    b"From", b"To", b"Subject", b"X-A", b"cc", b"CC", b"x-1", b"1", b"-", b"a", b":", b" :",
    b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\n\n", b"\r\r\n", b"value", b"\x00",
    b"\xff", b"(", b"<", b"=?utf-8?q?x?=",
]
_KEEPS = [
    None, frozenset({"subject", "from", "to", "cc"}), frozenset({"content-type"}),
    frozenset({"Subject", "x-a"}), frozenset(), frozenset({"-", "x-1", "to", "\u00e9"}),
]


def test_scan_header_matches_the_line_by_line_scan() -> None:
    rnd = random.Random(11)
    for _ in range(30_000):
        data = b"".join(rnd.choice(_HEADER_ATOMS) for _ in range(rnd.randint(0, 30)))
        start = rnd.randint(0, len(data)) if rnd.random() < 0.3 else 0
        end = rnd.randint(start, len(data)) if rnd.random() < 0.3 else None
        limit = rnd.randint(0, len(data) + 2) if rnd.random() < 0.5 else None
        keep = rnd.choice(_KEEPS)
        expected = _scan_header_by_lines(data, start, end, keep=keep, limit=limit)
        assert scan_header(data, start, end, keep=keep, limit=limit) == expected, (
            data, start, end, keep, limit)


# ---------------------------------------------------------------------------
# The mbox "From " line (mbox_line_end): one rule for the walk and submission

MBOX_LINE = b"From fork-admin@xent.com  Mon Sep 23 12:34:56 2002\n"


def test_mbox_line_before_a_header_is_skipped() -> None:
    assert mbox_line_end(MBOX_LINE + b"Return-Path: <x@y>\n\nbody") == len(MBOX_LINE)
    assert mbox_line_end(b"From x\r\nSubject : y\r\n\r\n") == len(b"From x\r\n")


def test_text_that_starts_with_from_is_not_an_mbox_line() -> None:
    assert mbox_line_end(b"From now on we meet at ten.\nSee you.\n") == 0
    assert mbox_line_end(b"From x\n\nbody") == 0  # no header after it
    assert mbox_line_end(b"From x\n folded: no\n") == 0  # a continuation is no field
    assert mbox_line_end(b"From x") == 0 and mbox_line_end(b"From x\n") == 0
    assert mbox_line_end(b"From: alice@a.example\nSubject: s\n\n") == 0
    assert mbox_line_end(b"from x\nSubject: s\n\n") == 0


def test_mbox_line_is_bounded() -> None:
    line = b"From " + b"x" * (MAX_MBOX_LINE - 6) + b"\n"
    assert len(line) == MAX_MBOX_LINE
    assert mbox_line_end(line + b"Subject: s\n") == MAX_MBOX_LINE
    assert mbox_line_end(b"From x" + line + b"Subject: s\n") == 0  # one octet too long
    name = b"X" * MAX_MBOX_LINE  # the colon is past the first MAX_MBOX_LINE octets
    assert mbox_line_end(b"From x\n" + name + b": v\n") == 0
    assert mbox_line_end(b"From x\n" + name[1:] + b": v\n") == len(b"From x\n")

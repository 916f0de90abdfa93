"""The MIME reader: what a message holds, read in bounded time and memory.

Not the :mod:`email` package, which decodes and copies every part: this
reader scans headers in place (:mod:`.headers`), walks the MIME tree by
searching for boundaries (:mod:`.walk`), decodes header text (:mod:`.header_text`,
RFC 2047; :mod:`.parameters`, RFC 2045 and 2231; :mod:`.charsets`) and only the
first lines of a text part (:mod:`.text`, :mod:`.html`), and reads a message
that is too large to hold a chunk at a time (:mod:`.skeleton`).
"""

from smdp.mail.mime.header_text import decode_header_text, display_name
from smdp.mail.mime.headers import (
    HeaderBlock,
    HeaderField,
    first_values,
    mbox_line_end,
    scan_header,
)
from smdp.mail.mime.skeleton import message_skeleton
from smdp.mail.mime.text import ShowLine, first_text_pieces, part_lines
from smdp.mail.mime.walk import (
    MAX_DEPTH,
    MAX_HEADER_OCTETS,
    MAX_PARTS,
    TextPart,
    Walk,
    walk_message,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_HEADER_OCTETS",
    "MAX_PARTS",
    "HeaderBlock",
    "HeaderField",
    "ShowLine",
    "TextPart",
    "Walk",
    "decode_header_text",
    "display_name",
    "first_text_pieces",
    "first_values",
    "mbox_line_end",
    "message_skeleton",
    "part_lines",
    "scan_header",
    "walk_message",
]

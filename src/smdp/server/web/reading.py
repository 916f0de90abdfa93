"""Reading an accepted message in the web app (issue 13; docs/web.md,
"Reading mail"): its header fields as text, its plain text, its HTML made
inert, its attachments by number.

The standard library's ``email`` parser (policy ``default``) reads the
message; what a sender wrote reaches the page as text only, except the HTML
body, which goes through nh3 (the maintained Python binding of ammonia, an
allow-list HTML sanitizer) and is then shown in a sandboxed frame of its
own with a policy that runs no script (api.py). Remote content (an image or
style from elsewhere: a tracking pixel tells the sender the mail was read,
and when) is cut out unless the reader asks for it, and counted so the page
can offer to load it.
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser

import nh3

# Tags and attributes kept in an HTML body: what mail uses to lay out text,
# tables and images; never script, forms, frames, objects or event handlers.
_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup",
    "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u",
    "ul",
}
_ATTRIBUTES = {
    "*": {"align", "bgcolor", "border", "color", "dir", "height", "lang", "style", "title",
          "valign", "width"},
    "a": {"href", "name"},
    "font": {"face", "size"},
    "img": {"alt", "src"},
    "table": {"cellpadding", "cellspacing"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
_LINK_SCHEMES = {"http", "https", "mailto"}
# The largest HTML body sanitized: far beyond any real message's text.
MAX_HTML = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Attachment:
    number: int  # 1-based, in the order of the message
    name: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class ReadView:
    headers: dict[str, str]
    text: str | None
    has_html: bool
    attachments: list[Attachment] = field(default_factory=list)


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # policy.default makes EmailMessage
    return message


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, IndexError, AttributeError):  # a field the parser cannot read
        return ""
    return "" if value is None else " ".join(str(value).split())


def _attachments(message: EmailMessage) -> list[Message]:
    try:
        return list(message.iter_attachments())
    except (KeyError, ValueError, AttributeError):  # a malformed multipart
        return []


def _content(part: Message) -> bytes | str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AssertionError):  # an unknown charset, bad encoding
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, (bytes, str)) else str(content)


def _size(part: Message) -> int:
    payload = part.get_payload(decode=True)
    return len(payload) if isinstance(payload, bytes) else 0


def read(raw: bytes) -> ReadView:
    message = parse(raw)
    headers = {name: _header(message, name)
               for name in ("From", "To", "Cc", "Subject", "Date", "Reply-To")}
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    text = _content(plain) if plain is not None else None
    attachments = [
        Attachment(n, part.get_filename() or f"attachment-{n}", part.get_content_type(),
                   _size(part))
        for n, part in enumerate(_attachments(message), 1)]
    return ReadView(headers, text if isinstance(text, str) else None, html is not None,
                    attachments)


def html_body(raw: bytes) -> str | None:
    html = parse(raw).get_body(preferencelist=("html",))
    if html is None:
        return None
    content = _content(html)
    return content if isinstance(content, str) else content.decode("utf-8", "replace")


def attachment(raw: bytes, number: int) -> tuple[Attachment, bytes] | None:
    parts = _attachments(parse(raw))
    if not 1 <= number <= len(parts):
        return None
    part = parts[number - 1]
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    return (Attachment(number, part.get_filename() or f"attachment-{number}",
                       part.get_content_type(), len(data)), data)


def sanitize(html: str, *, remote: bool) -> tuple[str, int]:
    """``html`` with only what ``_TAGS`` and ``_ATTRIBUTES`` allow, links
    opening elsewhere, and (unless ``remote``) every image source outside the
    message cut out; how many were cut. Styles stay (mail lays out with
    them), but the frame's policy lets no url() in them load."""
    blocked = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if tag == "a" and attribute == "href" and not value.startswith(
                ("http://", "https://", "mailto:", "#")):
            return None  # no data: or cid: page to open
        if tag == "img" and attribute == "src":
            if value.startswith(("data:", "cid:")):
                return value
            if remote and value.startswith(("http://", "https://")):
                return value
            blocked += 1
            return None
        return value

    cleaned = nh3.clean(html[:MAX_HTML], tags=_TAGS, attributes=_ATTRIBUTES,
                        url_schemes=_LINK_SCHEMES | {"data", "cid"}, attribute_filter=keep,
                        link_rel="noopener noreferrer", strip_comments=True)
    return cleaned, blocked

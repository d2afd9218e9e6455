"""Building and checking SIP messages (thin layer over aiosipua's parser)."""

from __future__ import annotations

import secrets

from aiosipua import SipMessage, SipRequest, SipResponse
from aiosipua.headers import CaseInsensitiveDict

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    513: "Message Too Large",
}

# what the IVR serves, said in Allow of every answer and INVITE it sends: REFER is
# taken in an operator's call (ivr/consultation.py; 405 in other dialogs)
ALLOWED_METHODS = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER"
REQUIRED_HEADERS = ("via", "from", "to", "call-id", "cseq")

__all__ = [
    "ALLOWED_METHODS",
    "REASONS",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "make_branch",
    "make_response",
    "make_tag",
    "parse_message",
]


class SipParseError(ValueError):
    """A datagram that is not a usable SIP message; ``reason`` says why."""


def make_tag() -> str:
    return secrets.token_hex(6)


def make_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse and check one datagram; raise SipParseError naming what is wrong."""
    try:
        message = SipMessage.parse(data)
    except (ValueError, IndexError) as exc:
        raise SipParseError(f"unparseable SIP message: {exc}") from exc
    if isinstance(message, SipResponse):
        if not 100 <= message.status_code <= 699:
            raise SipParseError(f"bad status code {message.status_code}")
        return message
    if not message.uri or " " in message.method or not message.method.isalpha():
        raise SipParseError(f"malformed request line {message.method!r} {message.uri!r}")
    return message


def check_request(request: SipRequest) -> str | None:
    """The reason a request must be answered 400, or None when it is sound."""
    for name in REQUIRED_HEADERS:
        if not request.headers.get_first(name):
            return f"Missing {name.title()} header"
    raw_cseq = request.headers.get_first("cseq") or ""
    parts = raw_cseq.split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
        return "Malformed CSeq header"
    if parts[1].upper() != request.method.upper():
        return "CSeq method does not match the request"
    try:
        via = request.via[0]
        from_addr = request.from_addr
        to_addr = request.to_addr
    except (ValueError, IndexError, KeyError):
        return "Malformed Via, From or To header"
    if not via.host or not via.branch:
        return "Via header lacks host or branch"
    if from_addr is None or to_addr is None:
        return "Malformed From or To header"
    for name in ("from", "to"):
        if _empty_tag(request.headers.get_first(name) or ""):
            # answered as is, our own tag would follow it: ";tag=;tag=..." matches no dialog
            return f"Empty tag in the {name.title()} header"
    return None


def _empty_tag(header_value: str) -> bool:
    tail = header_value.rsplit(">", 1)[-1] if ">" in header_value else header_value
    for part in tail.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "tag" and not value.strip():
            return True
    return False


def cseq_number(message: SipMessage) -> int:
    raw = message.headers.get_first("cseq") or "0"
    try:
        return int(raw.split()[0])
    except (ValueError, IndexError):
        return 0


def cseq_method(message: SipMessage) -> str:
    raw = message.headers.get_first("cseq") or ""
    parts = raw.split()
    return parts[1].upper() if len(parts) > 1 else ""


def top_branch(message: SipMessage) -> str:
    raw = message.headers.get_first("via") or ""
    for part in raw.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "branch":
            return value
    return ""


def tag_of(header_value: str | None) -> str | None:
    if not header_value:
        return None
    # the tag is a header parameter: after the closing '>' when name-addr form
    tail = header_value.rsplit(">", 1)[-1] if ">" in header_value else header_value
    for part in tail.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "tag":
            return value or None
    return None


def make_response(
    request: SipRequest,
    status: int,
    *,
    to_tag: str | None = None,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """A response that copies Via, From, To, Call-ID and CSeq from ``request``."""
    out = CaseInsensitiveDict()
    for value in request.headers.get("via"):
        out.append("Via", value)
    for name in ("from", "to", "call-id", "cseq"):
        copied = request.headers.get_first(name)
        if copied is not None:
            out.set_single(name.title() if name != "call-id" else "Call-ID", copied)
    if request.method.upper() == "INVITE" and 100 < status < 300:
        # a response that makes a dialog carries the proxies' Record-Route back
        # (RFC 3261 12.1.1), so the caller's ACK and BYE pass them too
        for value in request.headers.get("record-route"):
            out.append("Record-Route", value)
    to_value = out.get_first("to")
    if to_tag and to_value is not None and tag_of(to_value) is None and status != 100:
        out.set_single("To", f"{to_value};tag={to_tag}")
    for name, value in (headers or {}).items():
        out.set_single(name, value)
    if content_type:
        out.set_single("Content-Type", content_type)
    return SipResponse(
        headers=out,
        body=body,
        status_code=status,
        reason_phrase=reason or REASONS.get(status, "Unknown"),
    )


def uri_addr(uri: str, default: tuple[str, int]) -> tuple[str, int]:
    """host:port a SIP URI points at (no DNS: IP literals only)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    hostport = rest.rsplit("@", 1)[-1]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail.lstrip(":")
    else:
        host, _, port_text = hostport.partition(":")
    try:
        port = int(port_text) if port_text else 5060
    except ValueError:
        return default
    return (host or default[0], port)

"""One SIP dialog (a call leg): in-dialog requests both ways, and its end."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiosipua import SipRequest
from aiosipua.headers import CaseInsensitiveDict

from ivr.sip.messages import SipMessage, make_branch, uri_addr
from ivr.sip.sdp import MediaOffer
from ivr.sip.stream_transport import TcpAddr, uri_transport
from ivr.sip.transport import Addr, valid_destination

if TYPE_CHECKING:
    from ivr.sip.endpoint import SipEndpoint


def route_set_of(message: SipMessage, *, reverse: bool) -> tuple[str, ...]:
    """The dialog's route set from the Record-Route headers (RFC 3261 12.1): as they
    are for the side that answered the INVITE, reversed for the side that sent it."""
    routes = tuple(value.strip() for value in message.headers.get("record-route") if value.strip())
    return tuple(reversed(routes)) if reverse else routes


def route_uri(route: str) -> str:
    """The URI inside one Route / Record-Route value."""
    value = route.strip()
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0]
    return value


def is_loose(uri: str) -> bool:
    params = uri.split("?", 1)[0].split(";")[1:]
    return any(p.strip().lower() == "lr" or p.strip().lower().startswith("lr=") for p in params)


def next_hop(route_set: tuple[str, ...], default: Addr) -> Addr:
    """Where in-dialog requests go: the first route's host:port (an IP literal),
    else ``default`` (the address the dialog's first request came from or went to)."""
    if not route_set:
        return default
    uri = route_uri(route_set[0])
    addr = uri_addr(uri, default)
    if not valid_destination(addr):
        return default
    if uri_transport(uri) == "TCP":  # the proxy record-routed with ;transport=tcp
        if isinstance(default, TcpAddr) and default == addr:
            return default  # the same proxy, over the connection we have
        return TcpAddr(addr[0], addr[1])
    return addr


def add_routes(headers: CaseInsensitiveDict, target: str, route_set: tuple[str, ...]) -> str:
    """Append the Route headers of an in-dialog request; return its Request-URI
    (RFC 3261 12.2.1.1): the remote target, unless the first proxy is a strict
    router (no ;lr, RFC 2543), which gets the Request-URI and the target goes last."""
    routes = list(route_set)
    uri = target
    if routes and not is_loose(route_uri(routes[0])):
        uri = route_uri(routes.pop(0))
        routes.append(f"<{target}>")
    for route in routes:
        headers.append("Route", route)
    return uri


class DialogEnd(enum.StrEnum):
    REMOTE_BYE = "remote_bye"
    LOCAL_BYE = "local_bye"
    TRANSPORT_ERROR = "transport_error"  # no ACK, in-dialog 408/481/503, send failure
    SHUTDOWN = "shutdown"


class Dialog:
    """A confirmed dialog. ``ended`` resolves with the reason it ended."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        *,
        call_id: str,
        local_tag: str,
        local_header: str,
        remote_header: str,
        remote_target: str,
        remote_addr: Addr,
        local_cseq: int,
        remote_cseq: int,
        log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
        route_set: tuple[str, ...] = (),
    ) -> None:
        self._endpoint = endpoint
        self.call_id = call_id
        self.local_tag = local_tag
        self.local_header = local_header  # our From/To value with our tag
        self.remote_header = remote_header  # their From/To value with their tag
        self.remote_target = remote_target
        # the proxies that record-routed (Kamailio): in-dialog requests go through them
        self.route_set = route_set
        self.remote_addr = next_hop(route_set, remote_addr)
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.log = log
        self.ended: asyncio.Future[DialogEnd] = asyncio.get_running_loop().create_future()
        self.on_digit: Callable[[str, str], None] | None = None
        self.on_reoffer: Callable[[MediaOffer], None] | None = None
        # a REFER in this dialog: Refer-To -> (status, reason); None: 405 (ivr/consultation.py)
        self.on_refer: Callable[[str], tuple[int, str]] | None = None
        self.local_sdp = ""  # our current SDP, repeated in answers to re-INVITEs

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.local_tag)

    @property
    def active(self) -> bool:
        return not self.ended.done()

    def terminate(self, reason: DialogEnd) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)
        self._endpoint.forget_dialog(self)

    def new_request(
        self, method: str, *, body: bytes = b"", content_type: str | None = None
    ) -> SipRequest:
        self.local_cseq += 1
        headers = CaseInsensitiveDict()
        headers.append("Via", self._endpoint.via_value(make_branch(), self.remote_addr))
        headers.set_single("Max-Forwards", "70")
        headers.set_single("From", self.local_header)
        headers.set_single("To", self.remote_header)
        headers.set_single("Call-ID", self.call_id)
        headers.set_single("CSeq", f"{self.local_cseq} {method}")
        headers.set_single("Contact", self._endpoint.contact_for(self.remote_addr))
        headers.set_single("User-Agent", self._endpoint.user_agent)
        if content_type:
            headers.set_single("Content-Type", content_type)
        uri = add_routes(headers, self.remote_target, self.route_set)
        return SipRequest(headers=headers, body=body, method=method, uri=uri)

    async def bye(self, reason: DialogEnd = DialogEnd.LOCAL_BYE) -> None:
        """Hang up this leg (BYE, retransmitted until answered or timed out)."""
        if self.ended.done():
            return
        self.terminate(reason)
        transaction = self._endpoint.send_request(self.new_request("BYE"), self.remote_addr)
        try:
            response = await transaction.final
        except asyncio.CancelledError:
            return
        if response.status_code >= 300:
            self.log.info("BYE answered %d %s", response.status_code, response.reason_phrase)

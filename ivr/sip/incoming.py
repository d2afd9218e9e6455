"""An INVITE we received, before it is answered."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiosipua import SipRequest

from ivr.sip.dialog import Dialog, DialogEnd, route_set_of
from ivr.sip.messages import ALLOWED_METHODS, cseq_number, make_tag
from ivr.sip.messages import uri_addr as uri_addr  # was defined here
from ivr.sip.sdp import MediaOffer
from ivr.sip.stream_transport import dialog_hop
from ivr.sip.transactions import ServerTransaction
from ivr.sip.transport import Addr

if TYPE_CHECKING:
    from ivr.sip.endpoint import SipEndpoint


def uri_user(header_value: str) -> str:
    """The user part of the URI in a From/To header value ('' if none)."""
    value = header_value
    if "<" in value:
        value = value.split("<", 1)[1].split(">", 1)[0]
    value = value.split(";", 1)[0]
    if ":" in value:
        value = value.split(":", 1)[1]
    return value.split("@", 1)[0] if "@" in value else ""


def contact_uri(header_value: str | None) -> str | None:
    if not header_value:
        return None
    value = header_value.strip()
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0]
    return value.split(";", 1)[0]


class IncomingInvite:
    """A new call offered to us. Answer, ring or reject it exactly once."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        transaction: ServerTransaction,
        addr: Addr,
        offer: MediaOffer,
    ) -> None:
        self._endpoint = endpoint
        self.transaction = transaction
        self.request: SipRequest = transaction.request
        self.addr = addr
        self.offer = offer
        self.local_tag = make_tag()
        self.call_id = self.request.call_id or ""
        self.caller = uri_user(self.request.headers.get_first("from") or "")
        self.dialled = uri_user(self.request.headers.get_first("to") or "") or uri_user(
            "<" + self.request.uri + ">"
        )
        self.cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def answered(self) -> bool:
        return self.transaction.final_sent

    def ringing(self) -> None:
        if not self.transaction.final_sent:
            self.transaction.respond_status(180, to_tag=self.local_tag)

    def reject(
        self,
        status: int,
        reason: str | None = None,
        warning: str | None = None,
        *,
        counted_as: str | None = None,
    ) -> None:
        """``counted_as``: a refusal of the call, counted in the endpoint's
        ``rejected`` under this reason (/metrics)."""
        if counted_as is not None:
            self._endpoint.rejected[counted_as] += 1
        headers = {"Warning": f'399 12345-ivr "{warning}"'} if warning else None
        self.transaction.respond_status(
            status, to_tag=self.local_tag, reason=reason, headers=headers
        )
        self._endpoint.forget_invite(self)

    def answer(self, sdp: str) -> Dialog:
        """Send 200 OK with our SDP; the dialog is live from here on."""
        request = self.request
        from_value = request.headers.get_first("from") or ""
        to_value = (request.headers.get_first("to") or "") + f";tag={self.local_tag}"
        remote_target = contact_uri(request.headers.get_first("contact")) or request.uri
        dialog = Dialog(
            self._endpoint,
            call_id=self.call_id,
            local_tag=self.local_tag,
            local_header=to_value,
            remote_header=from_value,
            remote_target=remote_target,
            remote_addr=dialog_hop(self.addr, remote_target),
            local_cseq=0,
            remote_cseq=cseq_number(request),
            log=self._endpoint.log,
            route_set=route_set_of(request, reverse=False),
        )
        dialog.local_sdp = sdp
        self._endpoint.add_dialog(dialog)
        self.transaction.on_ack_timeout = lambda: dialog.terminate(DialogEnd.TRANSPORT_ERROR)
        self._endpoint.transactions_in.expect_ack(self.transaction)
        self.transaction.respond_status(
            200,
            to_tag=self.local_tag,
            headers={
                "Contact": self._endpoint.contact_for(self.addr),
                "Allow": ALLOWED_METHODS,
                "User-Agent": self._endpoint.user_agent,
            },
            body=sdp.encode(),
            content_type="application/sdp",
        )
        self._endpoint.forget_invite(self)
        return dialog

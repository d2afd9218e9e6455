"""An INVITE we send (operator legs; callbacks later) until it is answered."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiosipua import SipRequest, SipResponse
from aiosipua.auth import SipDigestAuth, answer_challenge
from aiosipua.headers import CaseInsensitiveDict

from ivr.sip.dialog import Dialog, add_routes, next_hop, route_set_of
from ivr.sip.incoming import contact_uri
from ivr.sip.messages import ALLOWED_METHODS, make_branch, make_tag, tag_of
from ivr.sip.sdp import MediaOffer, SdpError, parse_media
from ivr.sip.transactions import ClientTransaction
from ivr.sip.transport import Addr

if TYPE_CHECKING:
    from ivr.sip.endpoint import SipEndpoint


@dataclass(frozen=True)
class Answered:
    dialog: Dialog
    media: MediaOffer


@dataclass(frozen=True)
class Failed:
    status: int
    reason: str


class OutgoingInvite:
    def __init__(
        self,
        endpoint: SipEndpoint,
        target: str,
        addr: Addr,
        *,
        from_user: str,
        sdp: str,
        extra_headers: dict[str, str] | None = None,
        auth: SipDigestAuth | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._auth = auth  # digest credentials for a trunk that challenges (401/407)
        self.cseq = 1
        self.target = target
        self.addr = addr
        self.call_id = secrets.token_hex(12) + "@" + endpoint.public_host
        self.local_tag = make_tag()
        self.ringing = asyncio.Event()
        self.heard_from = asyncio.Event()  # any response at all (100 Trying included)
        self._cancel_requested = False
        headers = CaseInsensitiveDict()
        headers.append("Via", endpoint.via_value(make_branch(), addr))
        headers.set_single("Max-Forwards", "70")
        headers.set_single(
            "From", f"<sip:{from_user}@{endpoint.public_host}:{endpoint.port}>;tag={self.local_tag}"
        )
        headers.set_single("To", f"<{target}>")
        headers.set_single("Call-ID", self.call_id)
        headers.set_single("CSeq", "1 INVITE")
        headers.set_single("Contact", endpoint.contact_for(addr))
        headers.set_single("User-Agent", endpoint.user_agent)
        headers.set_single("Allow", ALLOWED_METHODS)
        for name, value in (extra_headers or {}).items():
            headers.set_single(name, value)
        headers.set_single("Content-Type", "application/sdp")
        self.request = SipRequest(headers=headers, body=sdp.encode(), method="INVITE", uri=target)
        self._transaction: ClientTransaction | None = None

    def start(self) -> None:
        self._transaction = self._endpoint.send_request(
            self.request, self.addr, on_provisional=self._provisional
        )

    def _provisional(self, response: SipResponse) -> None:
        self.heard_from.set()
        if response.status_code in (180, 183):
            self.ringing.set()

    async def result(self) -> Answered | Failed:
        """Wait for the final answer. A 2xx is ACKed and becomes a dialog."""
        assert self._transaction is not None
        try:
            response = await self._transaction.final
        except asyncio.CancelledError:
            return Failed(487, "Request Terminated")
        if response.status_code in (401, 407) and self._auth is not None and self.cseq == 1:
            retried = self._answer_challenge(response)
            if retried is not None:
                return await self.result()
        if response.status_code >= 300:
            return Failed(response.status_code, response.reason_phrase)
        return self._confirm(response)

    def _answer_challenge(self, response: SipResponse) -> ClientTransaction | None:
        """Send the INVITE again with digest credentials (RFC 3261 22.2)."""
        assert self._auth is not None
        answer = answer_challenge(
            self._auth, response, response.status_code, "INVITE", str(self.request.uri)
        )
        if answer is None or self._cancel_requested:
            return None
        name, value = answer
        self.cseq += 1
        headers = CaseInsensitiveDict()
        for key, values in self.request.headers.items():
            if key.lower() in ("via", "cseq", "authorization", "proxy-authorization"):
                continue
            for item in values:
                headers.append(key, item)
        headers.append("Via", self._endpoint.via_value(make_branch(), self.addr))
        headers.set_single("CSeq", f"{self.cseq} INVITE")
        headers.set_single(name, value)
        self.request = SipRequest(
            headers=headers, body=self.request.body, method="INVITE", uri=self.request.uri
        )
        self.start()
        return self._transaction

    def _confirm(self, response: SipResponse) -> Answered | Failed:
        remote_to = response.headers.get_first("to") or f"<{self.target}>"
        remote_target = contact_uri(response.headers.get_first("contact")) or self.target
        dialog = Dialog(
            self._endpoint,
            call_id=self.call_id,
            local_tag=self.local_tag,
            local_header=self.request.headers.get_first("from") or "",
            remote_header=remote_to,
            remote_target=remote_target,
            remote_addr=self.addr,
            local_cseq=self.cseq,
            remote_cseq=0,
            log=self._endpoint.log,
            route_set=route_set_of(response, reverse=True),
        )
        self._endpoint.add_dialog(dialog)
        self._endpoint.remember_ack(self.call_id, self.ack_for(response))
        self.resend_ack(response)
        if self._cancel_requested:
            self._endpoint.spawn(dialog.bye())
            return Failed(487, "Cancelled (answered too late)")
        try:
            media = parse_media(response.text)
        except SdpError as exc:
            self._endpoint.log.warning("operator answer has bad SDP: %s", exc)
            self._endpoint.spawn(dialog.bye())
            return Failed(488, f"bad SDP in answer: {exc}")
        return Answered(dialog=dialog, media=media)

    def ack_for(self, response: SipResponse) -> SipRequest:
        headers = CaseInsensitiveDict()
        headers.append("Via", self._endpoint.via_value(make_branch(), self.addr))
        headers.set_single("Max-Forwards", "70")
        headers.set_single("From", self.request.headers.get_first("from") or "")
        headers.set_single("To", response.headers.get_first("to") or "")
        headers.set_single("Call-ID", self.call_id)
        headers.set_single("CSeq", f"{self.cseq} ACK")
        target = contact_uri(response.headers.get_first("contact")) or self.target
        uri = add_routes(headers, target, route_set_of(response, reverse=True))
        return SipRequest(headers=headers, method="ACK", uri=uri)

    def resend_ack(self, response: SipResponse) -> None:
        hop = next_hop(route_set_of(response, reverse=True), self.addr)
        self._endpoint.transport_send(self.ack_for(response), hop)

    def cancel(self) -> None:
        """Stop ringing (CANCEL). A late 200 is ACKed and hung up."""
        if self._cancel_requested or self._transaction is None:
            return
        self._cancel_requested = True
        if self._transaction.final.done():
            return
        headers = CaseInsensitiveDict()
        headers.append("Via", self.request.headers.get_first("via") or "")
        headers.set_single("Max-Forwards", "70")
        headers.set_single("From", self.request.headers.get_first("from") or "")
        headers.set_single("To", self.request.headers.get_first("to") or "")
        headers.set_single("Call-ID", self.call_id)
        headers.set_single("CSeq", f"{self.cseq} CANCEL")
        cancel = SipRequest(headers=headers, method="CANCEL", uri=self.request.uri)
        self._endpoint.send_request(cancel, self.addr)

    @property
    def remote_tag_seen(self) -> str | None:
        return tag_of(self.request.headers.get_first("to"))

"""One SIP dialog (a call leg): in-dialog requests both ways, and its end."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiosipua import SipRequest
from aiosipua.headers import CaseInsensitiveDict

from ivr.sip.messages import make_branch
from ivr.sip.sdp import MediaOffer
from ivr.sip.transport import Addr

if TYPE_CHECKING:
    from ivr.sip.endpoint import SipEndpoint


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
    ) -> None:
        self._endpoint = endpoint
        self.call_id = call_id
        self.local_tag = local_tag
        self.local_header = local_header  # our From/To value with our tag
        self.remote_header = remote_header  # their From/To value with their tag
        self.remote_target = remote_target
        self.remote_addr = remote_addr
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.log = log
        self.ended: asyncio.Future[DialogEnd] = asyncio.get_running_loop().create_future()
        self.on_digit: Callable[[str, str], None] | None = None
        self.on_reoffer: Callable[[MediaOffer], None] | None = None
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
        headers.append("Via", self._endpoint.via_value(make_branch()))
        headers.set_single("Max-Forwards", "70")
        headers.set_single("From", self.local_header)
        headers.set_single("To", self.remote_header)
        headers.set_single("Call-ID", self.call_id)
        headers.set_single("CSeq", f"{self.local_cseq} {method}")
        headers.set_single("Contact", self._endpoint.contact_value)
        headers.set_single("User-Agent", self._endpoint.user_agent)
        if content_type:
            headers.set_single("Content-Type", content_type)
        return SipRequest(headers=headers, body=body, method=method, uri=self.remote_target)

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

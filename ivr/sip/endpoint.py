"""The SIP endpoint: one UDP socket, our transactions, the dialogs, dispatch.

Every request gets an answer where one is due (400 for malformed requests,
481 for unknown dialogs, 488 for unusable SDP, 405 for unsupported methods,
503 when full or shutting down; OPTIONS too while shutting down or draining)
and nothing a peer sends can stop the endpoint from taking the next call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from aiosipua import SipRequest, SipResponse
from aiosipua.auth import SipDigestAuth

from ivr.sip.dialog import Dialog, DialogEnd
from ivr.sip.edge_guard import EdgeGuard, EdgePolicy
from ivr.sip.incoming import IncomingInvite
from ivr.sip.messages import (
    ALLOWED_METHODS,
    check_request,
    cseq_method,
    cseq_number,
    make_response,
    make_tag,
    tag_of,
)
from ivr.sip.outgoing import OutgoingInvite
from ivr.sip.sdp import SdpError, parse_media
from ivr.sip.stream_transport import (
    SipConnection,
    SipStreamTransport,
    TcpAddr,
    transport_name,
    uri_transport,
)
from ivr.sip.transactions import ClientTransaction, ClientTransactions, ServerTransactions, Timers
from ivr.sip.transport import Addr, SipTransport

InviteHandler = Callable[[IncomingInvite], None]
DTMF_DIGITS = frozenset("0123456789*#ABCD")


def digit_from_info(content_type: str, body: str) -> str | None:
    """The key in a SIP INFO body (application/dtmf-relay or application/dtmf)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/dtmf-relay":
        for line in body.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                value = value.strip()
                return value.upper() if value.upper() in DTMF_DIGITS else None
        return None
    if kind == "application/dtmf":
        value = body.strip()
        if value == "10":
            return "*"
        if value == "11":
            return "#"
        return value.upper() if value.upper() in DTMF_DIGITS else None
    return None


class SipEndpoint:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        public_host: str,
        user_agent: str,
        log: logging.Logger,
        timers: Timers | None = None,
        edge: EdgePolicy | None = None,
        tcp: bool = False,
        tcp_max_connections: int = 1000,
        tcp_idle_timeout: float = 300.0,
    ) -> None:
        self.host = host
        self.port = port
        self.public_host = public_host or host
        self.user_agent = user_agent
        self.log = log
        self.timers = timers or Timers()
        self.on_invite: InviteHandler | None = None
        self.accepting = True
        self.refuse_reason = "Service Unavailable"
        self._transport = SipTransport(self._on_message, log)
        # SIP over TCP (ivr/sip/stream_transport.py): feeds the same _on_message;
        # always able to dial out, listening beside UDP when ``tcp``
        self.listen_tcp = tcp
        self._tcp = SipStreamTransport(
            self._on_message,
            log,
            max_connections=tcp_max_connections,
            idle_timeout=tcp_idle_timeout,
        )
        self._tcp.keep = self._carries_dialog
        self._tcp.on_unsent = self._unsent
        self._loop: asyncio.AbstractEventLoop | None = None
        self.transactions_in: ServerTransactions
        self.transactions_out: ClientTransactions
        self._dialogs: dict[tuple[str, str], Dialog] = {}
        self._invites: dict[tuple[str, str], IncomingInvite] = {}
        self._acks: dict[str, SipRequest] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # the edge (ivr/sip/edge_guard.py): requests refused before any state, by reason
        self.rejected: Counter[str] = Counter()
        self.edge = EdgeGuard(edge or EdgePolicy(), log, live_calls=self._live_call_ids)

    # -- life cycle -------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.transactions_in = ServerTransactions(self.transport_send, loop, self.log, self.timers)
        self.transactions_out = ClientTransactions(self.transport_send, loop, self.log, self.timers)
        wanted = self.port
        for attempt in range(20):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: self._transport, local_addr=(self.host, self.port)
            )
            sockname = transport.get_extra_info("sockname")
            if sockname:
                self.port = int(sockname[1])
            if not self.listen_tcp:
                break
            try:  # TCP on the same host:port (RFC 3261 18: every element takes both)
                await self._tcp.listen(self.host, self.port)
                break
            except OSError:
                transport.close()
                if wanted != 0 or attempt == 19:
                    raise
                # port 0 (tests): the UDP port picked is taken for TCP; pick again
                self._transport = SipTransport(self._on_message, self.log)
                self.port = 0
        self.log.info(
            "sip: listening on %s:%d/udp%s", self.host, self.port, "+tcp" if self.listen_tcp else ""
        )

    def close(self) -> None:
        self.edge.close()
        if self._loop is None:  # never started (a start-up that failed before)
            self._transport.close()
            return
        self.transactions_in.close()
        self.transactions_out.close()
        for task in list(self._tasks):
            task.cancel()
        self._transport.close()
        self._tcp.close()

    @property
    def is_open(self) -> bool:
        """The UDP socket is open, and the TCP listener listens (when it should)."""
        return self._transport.is_open and (not self.listen_tcp or self._tcp.is_listening)

    @property
    def bad_messages(self) -> int:
        return self._transport.bad_messages + self._tcp.bad_messages

    @property
    def tcp_connections(self) -> int:
        return self._tcp.connection_count

    @property
    def dialog_count(self) -> int:
        return len(self._dialogs)

    @property
    def pending_invites(self) -> int:
        return len(self._invites)

    # -- helpers used by dialogs and invites --------------------------------
    @property
    def contact_value(self) -> str:
        return f"<sip:ivr@{self.public_host}:{self.port}>"

    def contact_for(self, addr: Addr) -> str:
        """Our Contact in a message to ``addr``: ;transport=tcp when it is over TCP."""
        if isinstance(addr, TcpAddr):
            return f"<sip:ivr@{self.public_host}:{self.port};transport=tcp>"
        return self.contact_value

    def via_value(self, branch: str, addr: Addr | None = None) -> str:
        """Our Via in a request to ``addr`` (SIP/2.0/TCP when it goes over TCP)."""
        name = transport_name(addr) if addr is not None else "UDP"
        return f"SIP/2.0/{name} {self.public_host}:{self.port};branch={branch};rport"

    def transport_send(self, message: SipRequest | SipResponse, addr: Addr) -> bool:
        if isinstance(addr, TcpAddr):
            return self._tcp.send(message, addr)
        return self._transport.send(message, addr)

    def _carries_dialog(self, connection: SipConnection) -> bool:
        """A call runs over ``connection``: it stays open however long it is quiet."""
        return any(
            getattr(dialog.remote_addr, "connection", None) is connection
            or dialog.remote_addr == connection.key
            for dialog in self._dialogs.values()
        )

    def _unsent(self, message: SipRequest | SipResponse, addr: Addr) -> None:
        """No TCP connection could carry ``message``: its transaction ends now (503)."""
        if isinstance(message, SipRequest):
            self.transactions_out.unsent(message)

    def send_request(
        self,
        request: SipRequest,
        addr: Addr,
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> ClientTransaction:
        return self.transactions_out.start(request, addr, on_provisional)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add_dialog(self, dialog: Dialog) -> None:
        self._dialogs[dialog.key] = dialog

    def forget_dialog(self, dialog: Dialog) -> None:
        if self._dialogs.get(dialog.key) is dialog:
            del self._dialogs[dialog.key]
        self._acks.pop(dialog.call_id, None)
        self.edge.call_ended(dialog.call_id)

    def forget_invite(self, invite: IncomingInvite) -> None:
        self._invites.pop(invite.transaction.key, None)
        if (invite.call_id, invite.local_tag) not in self._dialogs:
            self.edge.call_ended(invite.call_id)  # refused or cancelled: no call made

    def remember_ack(self, call_id: str, ack: SipRequest) -> None:
        self._acks[call_id] = ack

    def invite(
        self,
        target: str,
        addr: Addr,
        *,
        from_user: str,
        sdp: str,
        extra_headers: dict[str, str] | None = None,
        auth: SipDigestAuth | None = None,
    ) -> OutgoingInvite:
        if uri_transport(target) == "TCP" and not isinstance(addr, TcpAddr):
            addr = TcpAddr(addr[0], addr[1])  # sip:...;transport=tcp: the INVITE goes over TCP
        outgoing = OutgoingInvite(
            self,
            target,
            addr,
            from_user=from_user,
            sdp=sdp,
            extra_headers=extra_headers,
            auth=auth,
        )
        outgoing.start()
        return outgoing

    # -- dispatch -----------------------------------------------------------
    def _on_message(self, message: SipRequest | SipResponse, addr: Addr) -> None:
        if isinstance(message, SipResponse):
            self._on_response(message, addr)
        else:
            self._on_request(message, addr)

    def _on_response(self, response: SipResponse, addr: Addr) -> None:
        if self.transactions_out.receive(response):
            return
        # a retransmitted 2xx to an INVITE of ours: ACK it again
        if cseq_method(response) == "INVITE" and 200 <= response.status_code < 300:
            ack = self._acks.get(response.call_id or "")
            if ack is not None:
                self.transport_send(ack, addr)
                return
        self.log.debug("sip: stray %d from %s:%d", response.status_code, addr[0], addr[1])

    def _live_call_ids(self) -> set[str]:
        return {key[0] for key in self._dialogs} | {i.call_id for i in self._invites.values()}

    def _refused_at_edge(self, request: SipRequest, addr: Addr) -> bool:
        """The edge's policy, before any transaction, dialog, task or RTP port:
        True when ``request`` was refused (answered statelessly, or not at all)."""
        to_tag = tag_of(request.headers.get_first("to"))
        if to_tag and (request.call_id or "", to_tag) in self._dialogs:
            return False  # in a call of ours (an operator's phone too)
        branch_key = ServerTransactions.key_of(request)
        if self.transactions_in.find_invite(branch_key) is not None:
            return False  # a retransmitted INVITE, its ACK or CANCEL
        refusal = self.edge.screen(
            request, addr[0], new_dialog=request.method.upper() == "INVITE" and not to_tag
        )
        if refusal is None:
            return False
        self.rejected[refusal.reason] += 1
        if refusal.status is not None and request.method.upper() != "ACK":
            response = make_response(
                request,
                refusal.status,
                reason=refusal.response_reason,
                to_tag=make_tag() if refusal.to_tag else None,
                headers={**refusal.headers, "User-Agent": self.user_agent},
            )
            self.transport_send(response, addr)
        return True

    def _on_request(self, request: SipRequest, addr: Addr) -> None:
        if self._refused_at_edge(request, addr):
            return
        problem = check_request(request)
        if problem is not None:
            self.rejected["malformed"] += 1
            self.log.warning(
                "sip: 400 to %s from %s:%d: %s", request.method, addr[0], addr[1], problem
            )
            if request.method != "ACK":
                self.transport_send(make_response(request, 400, reason=problem), addr)
            return
        if request.method.upper() == "OPTIONS":
            self._answer_options(request, addr)
            return
        transaction = self.transactions_in.receive(request, addr)
        if transaction is None:
            return  # retransmission or ACK, absorbed
        method = request.method.upper()
        to_tag = tag_of(request.headers.get_first("to"))
        if method == "INVITE":
            if to_tag:
                self._reinvite(transaction, request, to_tag)
            else:
                self._new_invite(transaction, request, addr)
        elif method == "CANCEL":
            self._cancel(transaction, request)
        elif method in ("BYE", "INFO", "UPDATE"):
            dialog = self._dialogs.get((request.call_id or "", to_tag or ""))
            if dialog is None:
                self.rejected["no_dialog"] += 1
                transaction.respond_status(481)
                return
            if method == "BYE":
                transaction.respond_status(200)
                dialog.terminate(DialogEnd.REMOTE_BYE)
            elif method == "INFO":
                self._info(transaction, request, dialog)
            else:
                transaction.respond_status(
                    200, headers={"Contact": self.contact_for(transaction.addr)}
                )
        elif method == "REFER" and self._refer(transaction, request, to_tag):
            pass
        else:
            self.rejected["method"] += 1
            transaction.respond_status(405, headers={"Allow": ALLOWED_METHODS})

    def _answer_options(self, request: SipRequest, addr: Addr) -> None:
        """OPTIONS is answered without a transaction (a retransmission is simply
        answered again): a prober's or a scanner's sweep leaves nothing behind."""
        if not self.accepting:
            # draining or stopping: a proxy probing us (Kamailio's dispatcher) takes
            # this node out and sends new calls elsewhere; calls in progress go on
            response = make_response(
                request,
                503,
                reason=self.refuse_reason,
                to_tag=make_tag(),
                headers={"Retry-After": "5", "User-Agent": self.user_agent},
            )
        else:
            response = make_response(
                request,
                200,
                to_tag=make_tag(),
                headers={
                    "Allow": ALLOWED_METHODS,
                    "Accept": "application/sdp, application/dtmf-relay, application/dtmf",
                    "Supported": "",
                    "User-Agent": self.user_agent,
                },
            )
        self.transport_send(response, addr)

    def _new_invite(self, transaction: Any, request: SipRequest, addr: Addr) -> None:
        if not self.accepting or self.on_invite is None:
            self.rejected["draining"] += 1
            transaction.respond_status(503, reason=self.refuse_reason, headers={"Retry-After": "5"})
            return
        transaction.respond_status(100)
        content_type = (request.content_type or "application/sdp").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            self.rejected["unsupported_media"] += 1
            transaction.respond_status(415, headers={"Accept": "application/sdp"})
            return
        try:
            offer = parse_media(request.text)
        except SdpError as exc:
            self.rejected["bad_sdp"] += 1
            self.log.warning(
                "sip: 488 to INVITE %s from %s:%d: %s", request.call_id, addr[0], addr[1], exc
            )
            transaction.respond_status(
                488, headers={"Warning": f'399 12345-ivr "{exc}"'}, to_tag=None
            )
            return
        if self._call_id_in_use(request.call_id or ""):
            # a new INVITE with the Call-ID of a call in progress (a merged request,
            # RFC 3261 8.2.2.2, or a forgery): refused, and that call goes on
            self.rejected["call_id_in_use"] += 1
            self.log.warning(
                "sip: 482 to INVITE %s from %s:%d: Call-ID of a call in progress",
                request.call_id,
                addr[0],
                addr[1],
            )
            transaction.respond_status(
                482, headers={"Warning": '399 12345-ivr "Call-ID of a call in progress"'}
            )
            return
        invite = IncomingInvite(self, transaction, addr, offer)
        self._invites[transaction.key] = invite
        self.edge.call_started(addr[0], invite.call_id)
        self.on_invite(invite)

    def _call_id_in_use(self, call_id: str) -> bool:
        return any(key[0] == call_id for key in self._dialogs) or any(
            invite.call_id == call_id for invite in self._invites.values()
        )

    def _reinvite(self, transaction: Any, request: SipRequest, to_tag: str) -> None:
        dialog = self._dialogs.get((request.call_id or "", to_tag))
        if dialog is None:
            self.rejected["no_dialog"] += 1
            transaction.respond_status(481)
            return
        dialog.remote_cseq = cseq_number(request)
        offer = None
        if request.body:
            try:
                offer = parse_media(request.text)
            except SdpError as exc:
                self.rejected["bad_sdp"] += 1
                transaction.respond_status(488, headers={"Warning": f'399 12345-ivr "{exc}"'})
                return
        if offer is not None and dialog.on_reoffer is not None:
            dialog.on_reoffer(offer)
        answer = getattr(dialog, "local_sdp", "")
        self.transactions_in.expect_ack(transaction)
        transaction.respond_status(
            200,
            headers={"Contact": self.contact_for(transaction.addr)},
            body=answer.encode(),
            content_type="application/sdp" if answer else None,
        )

    def _cancel(self, transaction: Any, request: SipRequest) -> None:
        key = ServerTransactions.key_of(request)
        invite = self._invites.get((key[0], "INVITE"))
        if invite is None:
            self.rejected["no_dialog"] += 1
            transaction.respond_status(481)
            return
        transaction.respond_status(200)
        if not invite.transaction.final_sent:
            invite.reject(487)
        if not invite.cancelled.done():
            invite.cancelled.set_result(None)

    def _refer(self, transaction: Any, request: SipRequest, to_tag: str | None) -> bool:
        """A REFER in a dialog that takes one (an operator's phone bringing a
        department in, ivr/consultation.py): answered here; False: 405 as before."""
        dialog = self._dialogs.get((request.call_id or "", to_tag or ""))
        if dialog is None or dialog.on_refer is None:
            return False
        refer_to = request.headers.get_first("refer-to") or ""
        if not refer_to:
            transaction.respond_status(400, reason="Missing Refer-To")
            return True
        status, reason = dialog.on_refer(refer_to)
        transaction.respond_status(status, reason=reason)
        return True

    def _info(self, transaction: Any, request: SipRequest, dialog: Dialog) -> None:
        content_type = request.content_type or ""
        if not request.body:
            transaction.respond_status(200)  # keep-alive INFO
            return
        digit = digit_from_info(content_type, request.text)
        if digit is None:
            self.rejected["unsupported_media"] += 1
            transaction.respond_status(
                415, headers={"Accept": "application/dtmf-relay, application/dtmf"}
            )
            return
        transaction.respond_status(200)
        if dialog.on_digit is not None:
            dialog.on_digit(digit, "info")

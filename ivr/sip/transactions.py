"""Our SIP transaction layer (RFC 3261 section 17), for UDP and TCP.

Server side: retransmitted requests are absorbed (the last response is sent
again, the core is not called twice); non-2xx finals to INVITE are
retransmitted until the ACK (timer G/H); 2xx finals to INVITE are
retransmitted until the dialog sees the ACK (section 13.3.1.4).
Client side: requests are retransmitted (timers A/E) until a response, and
time out (timer B/F) with a synthetic 408; non-2xx finals to INVITE are ACKed.
Over TCP (a reliable transport) nothing is retransmitted by the transactions and
timers D, I, J and K are zero (17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2); a 2xx to an
INVITE is still retransmitted until the ACK, as 13.3.1.4 asks "independent of
whatever transport protocols are used" (a UDP hop may lie beyond the proxy).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiosipua import SipRequest, SipResponse
from aiosipua.headers import CaseInsensitiveDict

from ivr.sip.messages import cseq_method, cseq_number, make_response, top_branch
from ivr.sip.stream_transport import is_reliable
from ivr.sip.transport import Addr

Sender = Callable[[SipRequest | SipResponse, Addr], bool]


@dataclass(frozen=True)
class Timers:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        return 64 * self.t1


class ServerTransaction:
    def __init__(
        self,
        layer: ServerTransactions,
        key: tuple[str, str],
        request: SipRequest,
        addr: Addr,
    ) -> None:
        self._layer = layer
        self.key = key
        self.request = request
        self.addr = addr
        self.last_response: SipResponse | None = None
        self.acked = False
        self._retransmit: asyncio.TimerHandle | None = None
        self._expire: asyncio.TimerHandle | None = None
        self.on_ack_timeout: Callable[[], None] | None = None

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.status_code >= 200

    def respond(self, response: SipResponse) -> None:
        if self.final_sent:
            return
        self.last_response = response
        self._layer.send(response, self.addr)
        if response.status_code < 200:
            return
        timers = self._layer.timers
        reliable = is_reliable(self.addr)
        if self.method == "INVITE":
            # retransmit the final until ACK: a 2xx over any transport (13.3.1.4),
            # a non-2xx over UDP only (timer G); wait for the ACK at most 64*T1 (timer H)
            if response.status_code < 300 or not reliable:
                self._schedule_retransmit(timers.t1)
            self._expire = self._layer.loop.call_later(timers.timeout, self._ack_timeout)
        elif reliable:
            self.terminate()  # timer J is zero over TCP
        else:
            self._expire = self._layer.loop.call_later(timers.timeout, self.terminate)

    def respond_status(self, status: int, **kwargs: object) -> SipResponse:
        response = make_response(self.request, status, **kwargs)  # type: ignore[arg-type]
        self.respond(response)
        return response

    def _schedule_retransmit(self, interval: float) -> None:
        self._retransmit = self._layer.loop.call_later(interval, self._resend, interval)

    def _resend(self, interval: float) -> None:
        if self.acked or self.last_response is None:
            return
        self._layer.send(self.last_response, self.addr)
        self._schedule_retransmit(min(interval * 2, self._layer.timers.t2))

    def retransmission(self) -> None:
        """The same request came again: answer with what we last said."""
        if self.last_response is not None:
            self._layer.send(self.last_response, self.addr)

    def ack(self) -> None:
        if self.acked:
            return
        self.acked = True
        if self._retransmit is not None:
            self._retransmit.cancel()
        if self._expire is not None:
            self._expire.cancel()
        # keep absorbing retransmissions of the ACK and INVITE for a while (timer I;
        # zero over TCP)
        if is_reliable(self.addr):
            self.terminate()
            return
        self._expire = self._layer.loop.call_later(self._layer.timers.t4, self.terminate)

    def _ack_timeout(self) -> None:
        if not self.acked:
            self._layer.log.warning(
                "sip: no ACK for %d to INVITE (Call-ID %s)",
                self.last_response.status_code if self.last_response else 0,
                self.request.call_id,
            )
            if self.on_ack_timeout is not None:
                self.on_ack_timeout()
        self.terminate()

    def terminate(self) -> None:
        for handle in (self._retransmit, self._expire):
            if handle is not None:
                handle.cancel()
        self._layer.remove(self)


class ServerTransactions:
    def __init__(
        self, send: Sender, loop: asyncio.AbstractEventLoop, log: logging.Logger, timers: Timers
    ) -> None:
        self.send = send
        self.loop = loop
        self.log = log
        self.timers = timers
        self._by_key: dict[tuple[str, str], ServerTransaction] = {}
        # 2xx-to-INVITE transactions waiting for their ACK, by (Call-ID, CSeq number)
        self._awaiting_ack: dict[tuple[str, int], ServerTransaction] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    @staticmethod
    def key_of(request: SipRequest) -> tuple[str, str]:
        method = "INVITE" if request.method == "ACK" else request.method
        via = request.headers.get_first("via") or ""
        return (top_branch(request) + "|" + via.split(";")[0].strip(), method)

    def receive(self, request: SipRequest, addr: Addr) -> ServerTransaction | None:
        """A new transaction for ``request``, or None when it was absorbed
        (a retransmission, or an ACK that belongs to a transaction)."""
        key = self.key_of(request)
        existing = self._by_key.get(key)
        if request.method == "ACK":
            if existing is not None:
                existing.ack()
                return None
            waiting = self._awaiting_ack.pop((request.call_id or "", cseq_number(request)), None)
            if waiting is not None:
                waiting.ack()
            return None  # the core also sees ACKs via ack_received()
        if existing is not None:
            existing.retransmission()
            return None
        transaction = ServerTransaction(self, key, request, addr)
        self._by_key[key] = transaction
        return transaction

    def find_invite(self, branch_key: tuple[str, str]) -> ServerTransaction | None:
        return self._by_key.get((branch_key[0], "INVITE"))

    def expect_ack(self, transaction: ServerTransaction) -> None:
        call_id = transaction.request.call_id or ""
        self._awaiting_ack[(call_id, cseq_number(transaction.request))] = transaction

    def remove(self, transaction: ServerTransaction) -> None:
        if self._by_key.get(transaction.key) is transaction:
            del self._by_key[transaction.key]
        call_key = (transaction.request.call_id or "", cseq_number(transaction.request))
        if self._awaiting_ack.get(call_key) is transaction:
            del self._awaiting_ack[call_key]

    def close(self) -> None:
        for transaction in list(self._by_key.values()):
            transaction.terminate()


class ClientTransaction:
    def __init__(
        self,
        layer: ClientTransactions,
        request: SipRequest,
        addr: Addr,
        on_provisional: Callable[[SipResponse], None] | None,
    ) -> None:
        self._layer = layer
        self.request = request
        self.addr = addr
        self.branch = top_branch(request)
        self.method = request.method
        self.on_provisional = on_provisional
        self.final: asyncio.Future[SipResponse] = layer.loop.create_future()
        self._got_provisional = False
        self._retransmit: asyncio.TimerHandle | None = None
        self._expire: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._layer.send(self.request, self.addr)
        timers = self._layer.timers
        if not is_reliable(self.addr):  # timers A and E: UDP only
            self._retransmit = self._layer.loop.call_later(timers.t1, self._resend, timers.t1)
        self._expire = self._layer.loop.call_later(timers.timeout, self._timeout)

    def _resend(self, interval: float) -> None:
        if self.final.done():
            return
        if self.method == "INVITE" and self._got_provisional:
            return  # timer A stops on a provisional response
        self._layer.send(self.request, self.addr)
        next_interval = interval * 2
        if self.method != "INVITE":
            next_interval = min(next_interval, self._layer.timers.t2)
        self._retransmit = self._layer.loop.call_later(next_interval, self._resend, next_interval)

    def _timeout(self) -> None:
        if not self.final.done():
            self._layer.log.warning(
                "sip: %s to %s:%d timed out (no final response)",
                self.method,
                self.addr[0],
                self.addr[1],
            )
            self.final.set_result(make_response(self.request, 408, reason="Timeout (local)"))
        self.terminate()

    def receive(self, response: SipResponse) -> None:
        status = response.status_code
        if status < 200:
            self._got_provisional = True
            if self.on_provisional is not None and not self.final.done():
                self.on_provisional(response)
            return
        if self.method == "INVITE" and status >= 300:
            self._layer.send(self._ack_for(response), self.addr)
        if self.final.done():
            return
        self.final.set_result(response)
        if self._retransmit is not None:
            self._retransmit.cancel()
        if self._expire is not None:
            self._expire.cancel()
        # linger to absorb retransmitted finals (timer D/K; zero over TCP)
        if is_reliable(self.addr):
            self.terminate()
            return
        self._expire = self._layer.loop.call_later(self._layer.timers.t4 * 2, self.terminate)

    def _ack_for(self, response: SipResponse) -> SipRequest:
        headers = CaseInsensitiveDict()
        headers.append("Via", self.request.headers.get_first("via") or "")
        headers.set_single("Max-Forwards", "70")
        headers.set_single("From", self.request.headers.get_first("from") or "")
        headers.set_single("To", response.headers.get_first("to") or "")
        headers.set_single("Call-ID", self.request.call_id or "")
        headers.set_single("CSeq", f"{cseq_number(self.request)} ACK")
        return SipRequest(headers=headers, method="ACK", uri=self.request.uri)

    def terminate(self) -> None:
        for handle in (self._retransmit, self._expire):
            if handle is not None:
                handle.cancel()
        if not self.final.done():
            self.final.cancel()
        self._layer.remove(self)


class ClientTransactions:
    def __init__(
        self, send: Sender, loop: asyncio.AbstractEventLoop, log: logging.Logger, timers: Timers
    ) -> None:
        self.send = send
        self.loop = loop
        self.log = log
        self.timers = timers
        self._by_key: dict[tuple[str, str], ClientTransaction] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def start(
        self,
        request: SipRequest,
        addr: Addr,
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> ClientTransaction:
        transaction = ClientTransaction(self, request, addr, on_provisional)
        self._by_key[(transaction.branch, transaction.method)] = transaction
        transaction.start()
        return transaction

    def unsent(self, request: SipRequest) -> None:
        """``request`` could not be sent (no TCP connection): its transaction ends
        with a synthetic 503 at once (RFC 3261 17.1.4), not at timer B/F."""
        transaction = self._by_key.get((top_branch(request), request.method))
        if transaction is None or transaction.final.done():
            return
        transaction.final.set_result(
            make_response(transaction.request, 503, reason="Transport Error (local)")
        )
        transaction.terminate()

    def receive(self, response: SipResponse) -> bool:
        """Hand a response to its transaction; False when none matches."""
        transaction = self._by_key.get((top_branch(response), cseq_method(response)))
        if transaction is None:
            return False
        transaction.receive(response)
        return True

    def remove(self, transaction: ClientTransaction) -> None:
        key = (transaction.branch, transaction.method)
        if self._by_key.get(key) is transaction:
            del self._by_key[key]

    def close(self) -> None:
        for transaction in list(self._by_key.values()):
            transaction.terminate()

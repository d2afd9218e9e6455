"""Placing calls to operators: an outgoing SIP leg with its own RTP stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiosipua.auth import SipDigestAuth

from ivr.call import EndReason
from ivr.media.clock import MediaClock
from ivr.media.ports import RtpPorts
from ivr.media.rtp import RtpStream
from ivr.sip.dialog import Dialog, DialogEnd
from ivr.sip.endpoint import SipEndpoint
from ivr.sip.incoming import uri_addr
from ivr.sip.outgoing import Answered, Failed, OutgoingInvite
from ivr.sip.sdp import build_offer, choose


@dataclass
class OperatorLine:
    dialog: Dialog
    stream: RtpStream
    uri: str

    @property
    def ended(self) -> asyncio.Future[object]:
        return self.dialog.ended  # type: ignore[return-value]

    async def hangup(self) -> None:
        self.stream.close()
        await self.dialog.bye(DialogEnd.LOCAL_BYE)


class SipDialer:
    def __init__(
        self,
        endpoint: SipEndpoint,
        ports: RtpPorts,
        clock: MediaClock,
        *,
        media_host: str,
        codecs: tuple[str, ...],
        log: logging.Logger,
    ) -> None:
        self._endpoint = endpoint
        self._ports = ports
        self._clock = clock
        self._media_host = media_host
        self._codecs = codecs
        self._log = log
        self._reaping: set[asyncio.Future[None]] = set()

    def _give_up(self, outgoing: OutgoingInvite, result: asyncio.Future[Answered | Failed]) -> None:
        """CANCEL the ringing leg; if it is answered anyway, hang it up."""
        outgoing.cancel()

        async def reap() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                late = await result
                if isinstance(late, Answered):
                    await late.dialog.bye()

        task = asyncio.ensure_future(reap())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def dial(
        self,
        uri: str,
        *,
        caller_stream: RtpStream,
        caller_id: str,
        timeout: float,
        abort: asyncio.Future[EndReason],
        extra_headers: dict[str, str] | None = None,
    ) -> OperatorLine | None:
        result = await self.call_out(
            uri,
            codec_first=caller_stream.codec,
            caller_id=caller_id,
            timeout=timeout,
            abort=abort,
            extra_headers=extra_headers,
        )
        return result if isinstance(result, OperatorLine) else None

    async def call_out(
        self,
        uri: str,
        *,
        caller_id: str,
        timeout: float,
        abort: asyncio.Future[Any],
        codec_first: str | None = None,
        extra_headers: dict[str, str] | None = None,
        auth: SipDigestAuth | None = None,
    ) -> OperatorLine | Failed:
        """Call ``uri``; the answered leg, or why not (408 for no answer in time)."""
        stream = RtpStream(self._clock, self._log)
        await stream.open(self._ports)
        result: OperatorLine | Failed = Failed(500, "not dialled")
        try:
            result = await self._ring(
                uri, stream, codec_first, caller_id, timeout, abort, extra_headers, auth
            )
        finally:
            if not isinstance(result, OperatorLine):
                stream.close()
        return result

    async def _ring(
        self,
        uri: str,
        stream: RtpStream,
        codec_first: str | None,
        caller_id: str,
        timeout: float,
        abort: asyncio.Future[Any],
        extra_headers: dict[str, str] | None,
        auth: SipDigestAuth | None,
    ) -> OperatorLine | Failed:
        # offer the caller's codec first so the bridge needs no transcoding
        first = codec_first or self._codecs[0]
        prefs = (first, *[c for c in self._codecs if c != first])
        sdp = build_offer(self._media_host, stream.local_port, prefs)
        addr = uri_addr(uri, ("127.0.0.1", 5060))
        outgoing = self._endpoint.invite(
            uri, addr, from_user=caller_id, sdp=sdp, extra_headers=extra_headers, auth=auth
        )
        result_task = asyncio.ensure_future(outgoing.result())
        watched: set[asyncio.Future[Any]] = {result_task, abort}
        try:
            done, _ = await asyncio.wait(
                watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            self._give_up(outgoing, result_task)
            raise
        if result_task not in done:
            why = "caller left" if abort.done() else f"no answer in {timeout:g} s"
            self._log.info("call to %s: cancelling (%s)", uri, why)
            self._give_up(outgoing, result_task)
            return Failed(487, why) if abort.done() else Failed(408, why)
        result = result_task.result()
        if not isinstance(result, Answered):
            self._log.info("call to %s: %d %s", uri, result.status, result.reason)
            return result
        chosen = choose(result.media, prefs)
        if chosen is None:
            self._log.warning("call to %s answered with no codec we offered", uri)
            await result.dialog.bye()
            return Failed(488, "answered with no codec we offered")
        result.dialog.local_sdp = sdp
        stream.set_remote(
            (result.media.address, result.media.port),
            chosen.codec,
            chosen.payload_type,
            chosen.dtmf_pt,
        )
        stream.start_sending()
        self._log.info("operator %s answered (%s)", uri, chosen.codec)
        return OperatorLine(dialog=result.dialog, stream=stream, uri=uri)

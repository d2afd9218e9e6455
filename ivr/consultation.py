"""Consultation (多方协同, 实时会商): during a bridged call the operator brings a
department or an expert into the call, and everyone hears everyone.

Whom: the ``[consultation] directory`` (name -> SIP URI, in file order), then
the ``[emergency]`` services that are configured (110, 119, 120). How: a
button on the console's screen pop, ``*7`` then the entry's number on the
operator's phone (RFC 4733 or SIP INFO), or a transfer (REFER) from the
operator's phone to an entry's URI (answered 202; NOTIFY with a sipfrag of
the outcome, RFC 3515).

From the first request on, the call's audio goes through a
:class:`~ivr.conference.Conference` (the caller and the operator keep talking
while the department rings); it stays one to the end of the call. Any party
may hang up and the others go on: the call is over when the caller leaves, or
when nobody but the caller is left and nobody is being rung. So an emergency
hand-over is warm: the operator brings in 110/119/120, stays while it
answers, then hangs up; caller and service go on (the operator is free for
the next call).

A department that is busy (486), unknown (404), refuses, or does not answer
in ``ring_timeout``: the operator hears a short busy tone on their leg only,
and their screen gets a ``consultation`` event saying why; the caller and the
operator go on talking. A party brought in that sends no RTP for
``silent_after`` seconds is hung up (the others go on), with the same event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from aiosipua import SipRequest

from ivr.call_commands import CommandFailed, Handler
from ivr.conference import CALLER, GUEST, OPERATOR, Conference, Party
from ivr.config import Settings
from ivr.media.clock import MediaClock
from ivr.media.rtp import PcmListener, unbridge
from ivr.operators import OperatorLeg, WaitingCaller
from ivr.sip.dialog import Dialog
from ivr.sip.outgoing import Failed
from ivr.tickets.events import TicketEvents

if TYPE_CHECKING:
    from ivr.consultation_board import ConsultationBoard
    from ivr.dialer import OperatorLine, SipDialer
    from ivr.sip.endpoint import SipEndpoint

KEY_GAP_S = 3.0  # *7 and the entry's number: at most this long between keys
EMERGENCY_NAMES = (("police", "110 报警"), ("fire", "119 火警"), ("ambulance", "120 急救"))
_URI = re.compile(r"<?\s*(sips?:[^>;\s]+)")


@dataclass(frozen=True)
class Entry:
    """Someone the operator may bring in."""

    number: int  # 1-based: *7 then this number on the operator's phone
    name: str
    uri: str
    kind: str  # "department" or "emergency"

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "name": self.name, "uri": self.uri, "kind": self.kind}


def directory(settings: Settings) -> list[Entry]:
    """The departments of [consultation] directory, then the configured [emergency]."""
    entries = [
        Entry(n, name, uri, "department")
        for n, (name, uri) in enumerate(settings.consultation.directory.items(), 1)
    ]
    for field_name, label in EMERGENCY_NAMES:
        uri = getattr(settings.emergency, field_name)
        if uri:
            entries.append(Entry(len(entries) + 1, label, uri, "emergency"))
    return entries


def bare_uri(text: str) -> str:
    """``<sip:a@b:5060;transport=udp>`` -> ``sip:a@b:5060`` (for comparing URIs)."""
    match = _URI.search(text)
    return match.group(1).lower() if match else text.strip().lower()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def busy_tone() -> npt.NDArray[np.int16]:
    """Three short beeps of the busy tone (450 Hz, as on Chinese phones), -12 dBFS."""
    t = np.arange(int(0.25 * 8000)) / 8000
    beep = (8000 * np.sin(2 * np.pi * 450 * t)).astype(np.int16)
    gap = np.zeros(int(0.15 * 8000), dtype=np.int16)
    return np.concatenate([beep, gap, beep, gap, beep])


FAILURES = {
    404: ("not_found", "号码不存在"),
    408: ("no_answer", "无人接听"),
    480: ("no_answer", "暂时无法接通"),
    486: ("busy", "忙线"),
    600: ("busy", "忙线"),
    603: ("declined", "拒接"),
}


def failure(status: int) -> tuple[str, str]:
    """(state, words for the operator's screen) for a SIP status."""
    return FAILURES.get(status, ("failed", f"呼叫失败 ({status})"))


class Conversation:
    """One bridged call and whoever was brought into it."""

    def __init__(
        self,
        owner: Consultations,
        call: WaitingCaller,
        leg: OperatorLeg,
        operator_uri: str,
    ) -> None:
        self._owner = owner
        self.call = call
        self.leg = leg
        self.operator_uri = operator_uri
        self.log = owner.log
        self.conference: Conference | None = None
        self.guests: dict[str, OperatorLine] = {}
        self.ringing: dict[str, asyncio.Task[str]] = {}
        self.outcomes: dict[str, str] = {}  # name -> last state (joined, busy, left...)
        self._stops: dict[str, asyncio.Future[None]] = {}  # set: stop ringing that one
        loop = asyncio.get_running_loop()
        self._over: asyncio.Future[str] = loop.create_future()
        self._keys = ""
        self._key_at = 0.0
        self._right: Callable[[list[PcmListener]], None] | None = None
        self.operator_here = True
        dialog = getattr(leg, "dialog", None)
        self._dialog = dialog if isinstance(dialog, Dialog) else None
        if self._dialog is not None:
            self._dialog.on_digit = self._operator_key
            self._dialog.on_refer = self._refer
        leg.stream.on_digit = self._operator_key
        call.gone.add_done_callback(lambda _: self._finish("caller_left"))
        leg.ended.add_done_callback(lambda _: self._operator_left())

    @property
    def over(self) -> asyncio.Future[str]:
        return self._over

    @property
    def call_id(self) -> str:
        return self.call.call_id

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "operator": self.operator_uri,
            "operator_here": self.operator_here,
            "parties": self.conference.names() if self.conference else ["caller", "operator"],
            "ringing": sorted(self.ringing),
            "outcomes": dict(self.outcomes),
        }

    # -- bringing someone in -------------------------------------------------------
    def request(self, entry: Entry, how: str) -> str:
        """Start ringing ``entry`` (``how``: console, dtmf, refer); at once: ringing,
        already (in the call or being rung) or over."""
        if self._over.done():
            return "over"
        if entry.name in self.guests or entry.name in self.ringing:
            return "already"
        task = asyncio.ensure_future(self.bring_in(entry, how))
        self.ringing[entry.name] = task
        task.add_done_callback(lambda _: self._rung(entry.name))
        return "ringing"

    def _rung(self, name: str) -> None:
        self.ringing.pop(name, None)
        self._stops.pop(name, None)
        self._owner.changed(self)

    def drop(self, name: str) -> str:
        """The operator drops ``name`` (a department or expert brought in): hung up,
        or its ringing stopped; the others go on. At once: dropping, cancelled,
        absent (neither in the call nor rung) or over."""
        if self._over.done():
            return "over"
        line = self.guests.get(name)
        if line is not None:
            self.log.info("consultation: %s drops %s", self.operator_uri, name)
            self._owner.spawn(line.hangup())  # _guest_left tells the screen
            return "dropping"
        stop = self._stops.get(name)
        if stop is not None and not stop.done():
            self.log.info("consultation: %s stops ringing %s", self.operator_uri, name)
            stop.set_result(None)
            return "cancelled"
        return "absent"

    async def bring_in(self, entry: Entry, how: str) -> str:
        """Ring ``entry`` and add them to the call: their final state."""
        settings = self._owner.settings()
        conference = self._to_conference()
        self.log.info(
            "consultation: %s brings in %s (%s) by %s",
            self.operator_uri,
            entry.name,
            entry.uri,
            how,
        )
        self._tell_screen(entry, "ringing", "正在呼叫")
        mark = getattr(self.call, "mark", None)
        if callable(mark):
            mark(f"consult:{entry.name}")
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stops[entry.name] = stop
        self._over.add_done_callback(lambda _: _settle(stop))
        try:
            result = await self._owner.dialer.call_out(
                entry.uri,
                caller_id=self.call.caller or "anonymous",
                timeout=settings.consultation.ring_timeout,
                abort=stop,
                codec_first=self.call.stream.codec,
            )
        except Exception as exc:  # a URI the dialer cannot reach at all
            self.log.exception("consultation: calling %s failed", entry.uri)
            result = Failed(500, str(exc))
        if isinstance(result, Failed):
            state, words = failure(result.status)
            if self._over.done():
                return "over"
            if stop.done():  # the operator dropped it while it rang
                self._tell_screen(entry, "cancelled", "已取消呼叫，通话继续")
                self._check_over()
                return "cancelled"
            self.log.warning(
                "consultation: %s (%s) %s: %d %s",
                entry.name,
                entry.uri,
                state,
                result.status,
                result.reason,
            )
            self._tell_operator()
            self._tell_screen(entry, state, f"{words}，通话继续", status=result.status)
            self._check_over()
            return state
        line = result
        if self._over.done() or stop.done():
            await line.hangup()
            if self._over.done():
                return "over"
            self._tell_screen(entry, "cancelled", "已取消呼叫，通话继续")
            self._check_over()
            return "cancelled"
        self.guests[entry.name] = line
        conference.add(entry.name, GUEST, line.stream)
        line.ended.add_done_callback(lambda _: self._guest_left(entry, line))
        self._tell_screen(entry, "joined", "已加入通话")
        return "joined"

    def _to_conference(self) -> Conference:
        if self.conference is not None:
            return self.conference
        settings = self._owner.settings()
        unbridge(self.call.stream, self.leg.stream)
        conference = Conference(
            self._owner.clock,
            self.log,
            silent_after=settings.consultation.silent_after,
            on_silent=self._silent,
        )
        conference.add("caller", CALLER, self.call.stream)
        if self.operator_here:
            conference.add("operator", OPERATOR, self.leg.stream)
        self.conference = conference
        if self._right is not None:
            self._right(conference.caller_hears)
        return conference

    def recorded_by(self, right_from: Callable[[list[PcmListener]], None]) -> None:
        """The call's recording: once in a conference, its right channel is what the
        caller hears (the sum of the others); ``right_from`` switches it."""
        self._right = right_from
        if self.conference is not None:
            right_from(self.conference.caller_hears)

    # -- the operator's phone --------------------------------------------------------
    def _operator_key(self, digit: str, source: str) -> None:
        now = time.monotonic()
        if now - self._key_at > KEY_GAP_S:
            self._keys = ""
        self._key_at = now
        self._keys = (self._keys + digit)[-6:]
        at = self._keys.rfind("*7")
        if at < 0:
            return
        wanted = self._keys[at + 2 :]
        entries = directory(self._owner.settings())
        width = len(str(len(entries))) if entries else 1
        if len(wanted) < width:
            return
        self._keys = ""
        if not wanted.isdigit() or not 1 <= int(wanted) <= len(entries):
            self.log.warning("consultation: *7%s from the operator: no entry %s", wanted, wanted)
            self._tell_operator()
            self._owner.events.publish(
                "consultation",
                {
                    **self.to_json(),
                    "name": f"*7{wanted}",
                    "state": "not_found",
                    "words": f"目录中没有第 {wanted} 项",
                },
            )
            return
        self.request(entries[int(wanted) - 1], f"dtmf ({source})")

    def _refer(self, refer_to: str) -> tuple[int, str]:
        """A REFER from the operator's phone: 202 and bring the entry in, or why not."""
        wanted = bare_uri(refer_to)
        for entry in directory(self._owner.settings()):
            if bare_uri(entry.uri) == wanted:
                state = self.request(entry, "refer")
                if state == "over":
                    return 481, "Call Is Over"
                task = self.ringing.get(entry.name)
                # NOTIFYs after the 202 that is sent on return
                loop = asyncio.get_running_loop()
                loop.call_soon(lambda: self._notify("100 Trying", final=False))
                if task is not None:
                    task.add_done_callback(self._refer_done)  # after the 202 by far
                else:  # already in the call
                    loop.call_soon(lambda: self._notify("200 OK", final=True))
                return 202, "Accepted"
        self.log.warning("consultation: REFER to %s: not in the directory", refer_to[:200])
        return 403, "Not In The Consultation Directory"

    def _refer_done(self, task: asyncio.Task[str]) -> None:
        state = "failed" if task.cancelled() or task.exception() else task.result()
        sipfrag = {
            "joined": "200 OK",
            "busy": "486 Busy Here",
            "not_found": "404 Not Found",
            "no_answer": "408 Request Timeout",
            "declined": "603 Decline",
        }.get(state, "500 Server Internal Error")
        self._notify(sipfrag, final=True)

    def _notify(self, sipfrag: str, *, final: bool) -> None:
        """NOTIFY of the REFER's progress (RFC 3515 section 2.4.5)."""
        dialog = self._dialog
        endpoint = self._owner.endpoint
        if dialog is None or endpoint is None or not dialog.active:
            return
        request: SipRequest = dialog.new_request(
            "NOTIFY",
            body=f"SIP/2.0 {sipfrag}\r\n".encode(),
            content_type="message/sipfrag;version=2.0",
        )
        request.headers.set_single("Event", "refer")
        request.headers.set_single(
            "Subscription-State", "terminated;reason=noresource" if final else "active;expires=60"
        )
        endpoint.send_request(request, dialog.remote_addr)

    # -- telling the operator ------------------------------------------------------------
    def _tell_operator(self) -> None:
        """A short busy tone on the operator's leg only."""
        conference = self.conference
        party = conference.party("operator") if conference is not None else None
        if party is not None:
            party.tell(self._owner.tone)

    def _tell_screen(self, entry: Entry, state: str, words: str, status: int | None = None) -> None:
        self.outcomes[entry.name] = state
        self._owner.changed(self)
        self._owner.events.publish(
            "consultation",
            {
                **self.to_json(),
                "name": entry.name,
                "uri": entry.uri,
                "kind": entry.kind,
                "state": state,
                "status": status,
                "words": f"{entry.name}: {words}",
            },
        )

    # -- leaving ------------------------------------------------------------------------
    def _silent(self, party: Party) -> None:
        line = self.guests.get(party.name)
        if line is None:
            return
        self.log.warning("consultation: %s sends no RTP: hung up", party.name)
        entry = self._entry_named(party.name, line.uri)
        self._tell_screen(entry, "dropped_silent", "无语音，已挂断，通话继续")
        self._owner.spawn(line.hangup())

    def _entry_named(self, name: str, uri: str) -> Entry:
        for entry in directory(self._owner.settings()):
            if entry.name == name:
                return entry
        return Entry(0, name, uri, "department")

    def _guest_left(self, entry: Entry, line: OperatorLine) -> None:
        if self.guests.get(entry.name) is not line:
            return
        del self.guests[entry.name]
        if self.conference is not None:
            self.conference.remove(entry.name)
        if not self._over.done():
            if self.outcomes.get(entry.name) != "dropped_silent":
                self._tell_screen(entry, "left", "已离开通话")
            self._check_over()

    def _operator_left(self) -> None:
        self.operator_here = False
        if self._dialog is not None:
            self._dialog.on_refer = None
        if self._over.done():
            return
        if self.conference is None:
            self._finish("operator_left")  # a plain bridge: over, as before
            return
        self.conference.remove("operator")
        self.log.info("consultation: operator %s left; the call goes on", self.operator_uri)
        self._owner.changed(self)
        self._check_over()

    def _check_over(self) -> None:
        if self._over.done():
            return
        if self.conference is None:
            if not self.operator_here:
                self._finish("operator_left")
            return
        others = [n for n in self.conference.names() if n != "caller"]
        if not others and not self.ringing:
            self._finish("everyone_left")
        elif not others and self.ringing:
            # nobody else yet; the call ends if the last one rung does not come
            for task in self.ringing.values():
                task.add_done_callback(lambda _: self._check_over())

    def _finish(self, why: str) -> None:
        if not self._over.done():
            self.log.info("conversation over: %s", why)
            self._over.set_result(why)

    async def close(self) -> None:
        """The call is over: hang up whoever was brought in, stop mixing."""
        self._finish("closed")
        for task in list(self.ringing.values()):
            task.cancel()
        for line in list(self.guests.values()):
            with contextlib.suppress(Exception):
                await line.hangup()
        self.guests.clear()
        if self.conference is not None:
            self.conference.close()
        if self._dialog is not None:
            self._dialog.on_refer = None
            self._dialog.on_digit = None
        self.leg.stream.on_digit = None
        self._owner.forget(self)


class Consultations:
    """Every bridged call's conversation on this node (the Hotline owns it)."""

    def __init__(
        self,
        *,
        dialer: SipDialer,
        clock: MediaClock,
        settings: Callable[[], Settings],
        events: TicketEvents,
        log: logging.Logger,
        endpoint: SipEndpoint | None = None,
    ) -> None:
        self.dialer = dialer
        self.clock = clock
        self.settings = settings
        self.events = events
        self.log = log
        self.endpoint = endpoint
        self.tone = busy_tone()
        self.conversations: dict[str, Conversation] = {}
        # who is in each conversation, for the consoles of other nodes (a cluster)
        self.board: ConsultationBoard | None = None
        self._recordings: dict[str, Callable[[list[PcmListener]], None]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    def begin(self, call: WaitingCaller, leg: OperatorLeg, operator_uri: str) -> Conversation:
        """The desk bridged ``call`` to ``operator_uri``: its conversation."""
        talk = Conversation(self, call, leg, operator_uri)
        self.conversations[call.call_id] = talk
        self.changed(talk)
        right = self._recordings.pop(call.call_id, None)
        if right is not None:
            talk.recorded_by(right)
        return talk

    def recorded(self, call_id: str, right_from: Callable[[list[PcmListener]], None]) -> None:
        """The call's conversation recording (see :meth:`Conversation.recorded_by`)."""
        talk = self.conversations.get(call_id)
        if talk is not None:
            talk.recorded_by(right_from)
        else:
            self._recordings[call_id] = right_from

    def forget(self, talk: Conversation) -> None:
        if self.conversations.get(talk.call_id) is talk:
            del self.conversations[talk.call_id]
            if self.board is not None:
                self.board.remove(talk.call_id)
        self._recordings.pop(talk.call_id, None)

    def changed(self, talk: Conversation) -> None:
        """Who is in ``talk`` changed: written for the other nodes' consoles."""
        if self.board is not None and self.conversations.get(talk.call_id) is talk:
            self.board.put(talk.call_id, talk.to_json())

    # -- console commands (ivr/call_commands.py: from this node's console or another's)
    def commands(self) -> dict[str, Handler]:
        return {"consult": self._consult_command, "drop": self._drop_command}

    def _talk(self, call_id: str) -> Conversation:
        talk = self.conversations.get(call_id)
        if talk is None:
            raise CommandFailed("这通电话没有接通坐席，无法多方协同 (not bridged)")
        return talk

    async def _consult_command(
        self, call_id: str, args: Mapping[str, Any], by: str
    ) -> dict[str, Any]:
        """{"name": a directory entry}: ring it into the call."""
        talk = self._talk(call_id)
        name = args.get("name")
        entry = self.entry(name) if isinstance(name, str) else None
        if entry is None:
            known = ", ".join(e.name for e in self.directory()) or "none configured"
            raise CommandFailed(f"{str(name)[:40]!r} 不在协同目录中 (known: {known})")
        state = talk.request(entry, f"console ({by})")
        if state == "over":
            raise CommandFailed("通话已结束")
        self.log.info("console: %s brings %s into %s: %s", by, entry.name, call_id, state)
        return {"name": entry.name, "state": state}

    async def _drop_command(self, call_id: str, args: Mapping[str, Any], by: str) -> dict[str, Any]:
        """{"name": a party brought in}: hang it up (or stop ringing it)."""
        talk = self._talk(call_id)
        name = args.get("name")
        if not isinstance(name, str) or name in ("caller", "operator"):
            raise CommandFailed("只能移出被邀请的一方 (a department or expert brought in)")
        state = talk.drop(name)
        if state == "over":
            raise CommandFailed("通话已结束")
        if state == "absent":
            raise CommandFailed(f"{name[:40]} 不在通话中")
        self.log.info("console: %s drops %s from %s: %s", by, name, call_id, state)
        return {"name": name, "state": state}

    def directory(self) -> list[Entry]:
        return directory(self.settings())

    def entry(self, name: str) -> Entry | None:
        for entry in self.directory():
            if entry.name == name:
                return entry
        return None

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

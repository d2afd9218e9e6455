"""The web console's pages and the API behind them (operators and admins).

Pages are static HTML + JavaScript (ivr/web/static/) that call the JSON API;
every API route checks the user's role (ivr.web.auth.require) and every write
needs the session's CSRF token (the auth middleware).

Operator: availability, the live queue, the screen pop of the call being put
through to them (the prefilled ticket, evidence highlighted), edit and save,
likely duplicates, pending callbacks.  Admin: tickets (filters, CSV), the
situation dashboard's counts, prompts per dialect (listen, upload, synthesise);
dial plans are in ivr.web.admin_plans.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import soundfile as sf
from aiohttp import web

from ivr.audit import masked_csv
from ivr.call_commands import CallCommands, CommandOutcome
from ivr.callbacks import CallbackQueue, CallbackState
from ivr.config import AuditSettings
from ivr.consultation import Consultations
from ivr.consultation_board import ConsultationBoard
from ivr.media.prompt_audio import SAMPLE_RATE
from ivr.operators import OperatorDesk
from ivr.prompts import PromptError, PromptLibrary
from ivr.tickets import STATUSES, TicketError, TicketStore
from ivr.tickets.cases import CaseStore
from ivr.tickets.counsellor import FIELD as COUNSELLOR_FIELD
from ivr.tickets.counsellor import flag_value
from ivr.tickets.counsellor import flagged as counsellor_flagged
from ivr.tickets.counsellor import why as counsellor_why
from ivr.tickets.events import TicketEvents
from ivr.tickets.search import TicketFilter, TicketSearch, tickets_csv
from ivr.voice_recordings import VoiceImportError, check_recording, install_recording, voice_status
from ivr.web.audit import shown
from ivr.web.auth import USER_KEY, require
from ivr.web.responses import STATIC, static_page
from ivr.web.responses import json_response as _json

MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # a prompt recording; minutes of 16-bit 44.1 kHz stereo
MAX_EDIT_BYTES = 64 * 1024
EDITABLE = re.compile(r"[a-z_]{1,40}")
_PROMPT_KEY = re.compile(r"[a-z0-9_]{1,64}")
_NUMBER = re.compile(r"[0-9]{1,18}")  # not str.isdigit: "²" is a digit that int() refuses


class LiveCallView(Protocol):
    """What the console shows of a call in progress."""

    @property
    def call_id(self) -> str: ...

    @property
    def caller(self) -> str: ...

    dialect: str
    elderly: bool
    enterprise: str | None

    def ticket_id(self) -> int | None: ...


@dataclass
class ConsoleParts:
    """What the console reads and changes; made by the composition root."""

    desk: OperatorDesk
    tickets: Callable[[], TicketStore | None]
    search: Callable[[], TicketSearch | None]
    callbacks: Callable[[], CallbackQueue | None]
    calls: Callable[[], Mapping[str, LiveCallView]]
    prompts: PromptLibrary
    prompt_keys: Callable[[], set[str]]
    prompt_texts: Callable[[], Mapping[str, str]]
    rebuild_prompts: Callable[[], Awaitable[None]]
    dialects: tuple[str, ...]
    voices: Mapping[str, str]
    voices_dir: Path
    duplicate_window: float
    events: TicketEvents
    log: logging.Logger
    # [audit]: who may export, who sees whole numbers and transcripts in it
    audit: Callable[[], AuditSettings] = AuditSettings
    # departments the operator brings into their call (ivr/consultation.py)
    consultations: Consultations | None = None
    # commands on calls carried out by the node holding the call (ivr/call_commands.py)
    commands: Callable[[], CallCommands | None] = lambda: None
    # who is in the consultations of calls other nodes hold (ivr/consultation_board.py)
    board: Callable[[], ConsultationBoard | None] = lambda: None
    # [merging]: a ticket an operator saves joins its matter's case (ivr/tickets/cases.py)
    cases: Callable[[], CaseStore | None] = lambda: None


def console_routes(parts: ConsoleParts) -> list[web.AbstractRouteDef]:
    c = _Console(parts)
    return [
        web.get("/", c.home),
        web.get("/login", static_page("login.html")),
        web.get("/operator", static_page("operator.html")),
        web.get("/admin", static_page("admin.html")),
        web.static("/static", STATIC),
        web.get("/api/console/me", c.me),
        web.post("/api/console/availability", c.availability),
        web.get("/api/console/queue", c.queue),
        web.get("/api/console/callbacks", c.pending_callbacks),
        web.post("/api/console/consultation", c.consult),
        web.post("/api/console/consultation/drop", c.drop_party),
        web.post("/api/console/hangup", c.hang_up),
        web.post("/api/console/counsellor", c.counsellor),
        web.get("/api/tickets", c.find),
        web.get("/api/tickets.csv", c.export),
        web.post("/api/tickets/{id}", c.edit),
        web.get("/api/tickets/{id}/duplicates", c.duplicates),
        web.post("/api/tickets/{id}/duplicate", c.mark_duplicate),
        web.get("/api/tickets/{id}/recordings/{recording}.wav", c.recording_audio),
        web.get("/api/stats", c.stats),
        web.get("/api/admin/prompts", c.prompt_status),
        web.get("/api/admin/prompts/{dialect}/{key}.wav", c.prompt_audio),
        web.post("/api/admin/prompts/{dialect}/{key}", c.upload_prompt),
        web.post("/api/admin/prompts/{dialect}/{key}/synthesise", c.synthesise_prompt),
    ]


def _error(status: int, message: str) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        413: web.HTTPRequestEntityTooLarge,
        503: web.HTTPServiceUnavailable,
    }
    kind = kinds[status]
    body = json.dumps({"error": message}, ensure_ascii=False)
    if kind is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(
            max_size=MAX_UPLOAD_BYTES, actual_size=0, text=body, content_type="application/json"
        )
    return kind(text=body, content_type="application/json")


def _date(text: str, name: str) -> float:
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise _error(400, f"{name}={text[:20]!r}: want a date like 2026-11-25") from None
    return datetime.datetime.combine(day, datetime.time()).timestamp()


class _Console:
    def __init__(self, parts: ConsoleParts) -> None:
        self.p = parts

    # -- pages ------------------------------------------------------------------
    async def home(self, request: web.Request) -> web.Response:
        user = request.get(USER_KEY)
        pages = {
            "admin": "/admin",
            "supervisor": "/supervisor",
            "department": "/department",
            "reviewer": "/quality",
        }
        target = "/login" if user is None else pages.get(user.role, "/operator")
        raise web.HTTPFound(target)

    # -- helpers ----------------------------------------------------------------
    def _store(self) -> TicketStore:
        store = self.p.tickets()
        if store is None:
            raise _error(503, "starting up")
        return store

    @staticmethod
    def _id(request: web.Request) -> int:
        raw = request.match_info["id"]
        if _NUMBER.fullmatch(raw) is None:
            raise _error(400, f"ticket id {raw[:40]!r} is not a number")
        return int(raw)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_EDIT_BYTES:
            raise _error(413, f"the body is over {MAX_EDIT_BYTES} bytes")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # nested too deep
            raise _error(400, "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise _error(400, "the body must be a JSON object")
        return body

    def _call_json(self, call_id: str) -> dict[str, Any]:
        call = self.p.calls().get(call_id)
        if call is None:
            return {"call_id": call_id}
        return {
            "call_id": call_id,
            "caller": call.caller,
            "dialect": call.dialect,
            "elderly": call.elderly,
            # a business's name (企业专席), "" for the key 企业服务, null for a citizen
            "enterprise": call.enterprise,
            "ticket_id": call.ticket_id(),
        }

    # -- operator -----------------------------------------------------------------
    async def me(self, request: web.Request) -> web.Response:
        user = require(request, "operator")
        body: dict[str, Any] = {"user": {"name": user.name, "role": user.role}}
        body["sip_uri"] = user.sip_uri
        operators = self.p.desk.operators_named(user.sip_uri) if user.sip_uri else []
        body["operator"] = bool(operators)
        body["ready"] = bool(operators) and not operators[0].paused
        body["state"] = operators[0].state.value if operators else None
        call_id = self.p.desk.current_call(user.sip_uri) if user.sip_uri else None
        body["call"] = self._call_json(call_id) if call_id else None
        ticket = None
        if body["call"] and body["call"].get("ticket_id"):
            found = await self._store().get(int(body["call"]["ticket_id"]))
            ticket = found.to_json() if found is not None else None
        elif call_id:  # a call another node holds: its ticket is in the store
            tickets = await self._store().for_call(call_id)
            if tickets:
                ticket = tickets[-1].to_json()
                body["call"]["ticket_id"] = tickets[-1].id
                body["call"]["caller"] = tickets[-1].caller
        body["ticket"] = ticket
        body["consultation"] = await self._consultation(call_id)
        body["counsellor"] = self._counsellor(ticket)
        return _json(body)

    def _counsellor(self, ticket: dict[str, Any] | None) -> dict[str, Any]:
        """心理援助 on the screen: whether the ticket is flagged and why, and whom
        the 请心理咨询师 button rings ([counsellors] consult; None: no button)."""
        talks = self.p.consultations
        consult = talks.settings().counsellors.consult if talks is not None else ""
        fields = ticket["fields"] if ticket is not None else {}
        return {
            "needed": counsellor_flagged(fields),
            "why": counsellor_why(fields),
            "consult": consult if talks is not None and talks.entry(consult) else None,
        }

    async def counsellor(self, request: web.Request) -> web.Response:
        """请心理咨询师: bring the [counsellors] consult entry into the operator's
        call, flagging its ticket needs_counsellor if it was not."""
        user = require(request, "operator")
        talks = self.p.consultations
        consult = talks.settings().counsellors.consult if talks is not None else ""
        entry = talks.entry(consult) if talks is not None and consult else None
        if talks is None or entry is None:
            raise _error(409, "no counsellor to call: set [counsellors] consult in config.toml")
        call_id = self._operator_call(user)  # whichever node holds it (a command)
        flagged_now = False
        call = self.p.calls().get(call_id)
        ticket_id = call.ticket_id() if call is not None else None
        store = self._store()
        if ticket_id is None:  # a call another node holds: its ticket is in the store
            tickets = await store.for_call(call_id)
            ticket_id = tickets[-1].id if tickets else None
        if ticket_id:
            ticket = await store.get(ticket_id)
            if ticket is not None and not counsellor_flagged(ticket.fields):
                ticket = await store.edit(ticket_id, {COUNSELLOR_FIELD: "true"}, who=user.name)
                self.p.events.publish("edited", ticket.to_json())
                flagged_now = True
        outcome = await self._run(user.name, call_id, "consult", {"name": entry.name})
        self.p.log.info(
            "console: %s brings counsellor %s into %s: %s",
            user.name,
            entry.name,
            call_id,
            outcome.result.get("state"),
        )
        return _json(
            {"name": entry.name, "state": outcome.result.get("state"), "flagged": flagged_now}
        )

    async def _consultation(self, call_id: str | None) -> dict[str, Any] | None:
        """Whom the operator may bring into their bridged call, and who is in it
        (this node's conversation, or the one the node holding the call wrote)."""
        talks = self.p.consultations
        if talks is None or call_id is None:
            return None
        talk = talks.conversations.get(call_id)
        state: dict[str, Any] | None = talk.to_json() if talk is not None else None
        board = self.p.board()
        if state is None and board is not None:
            try:
                state = await board.read(call_id)
            except Exception as exc:  # the store is away: no buttons for another node's call
                self.p.log.debug("console: consultation of %s not read: %s", call_id, exc)
        if state is None:
            return None
        return {**state, "directory": [e.to_json() for e in talks.directory()]}

    async def _run(
        self, user_name: str, call_id: str, command: str, args: dict[str, Any]
    ) -> CommandOutcome:
        """``command`` on the call, carried out by the node holding it; its outcome,
        or 409 with the reason (ivr/call_commands.py)."""
        commands = self.p.commands()
        if commands is None:
            raise _error(503, "starting up")
        outcome = await commands.run(call_id, command, args, user_name)
        if not outcome.ok:
            self.p.log.info(
                "console: %s's %s on %s failed: %s", user_name, command, call_id, outcome.reason
            )
            raise _error(409, outcome.reason)
        return outcome

    def _operator_call(self, user: Any) -> str:
        call_id = self.p.desk.current_call(user.sip_uri) if user.sip_uri else None
        if call_id is None:
            raise _error(409, f"{user.name} has no bridged call")
        return call_id

    async def consult(self, request: web.Request) -> web.Response:
        """Bring a directory entry into the operator's call: {"name": "住建局"}
        (whichever node holds the call)."""
        user = require(request, "operator")
        body = await self._body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _error(400, 'want {"name": "<a name of [consultation] directory>"}')
        talks = self.p.consultations
        if talks is None:
            raise _error(409, "consultation is not available")
        call_id = self._operator_call(user)
        entry = talks.entry(name)  # every node has the same directory
        if entry is None:
            known = ", ".join(e.name for e in talks.directory()) or "none configured"
            raise _error(404, f"{name[:40]!r} is not in the directory (known: {known})")
        outcome = await self._run(user.name, call_id, "consult", {"name": entry.name})
        return _json(outcome.to_json())

    async def drop_party(self, request: web.Request) -> web.Response:
        """Drop a party brought into the operator's call: {"name": "住建局"}."""
        user = require(request, "operator")
        body = await self._body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _error(400, 'want {"name": "<a party brought into the call>"}')
        call_id = self._operator_call(user)
        outcome = await self._run(user.name, call_id, "drop", {"name": name[:200]})
        return _json(outcome.to_json())

    async def hang_up(self, request: web.Request) -> web.Response:
        """End the operator's call (the caller hears the line close)."""
        user = require(request, "operator")
        call_id = self._operator_call(user)
        outcome = await self._run(user.name, call_id, "hangup", {})
        return _json(outcome.to_json())

    async def availability(self, request: web.Request) -> web.Response:
        user = require(request, "operator")
        body = await self._body(request)
        ready = body.get("ready")
        if not isinstance(ready, bool):
            raise _error(400, 'want {"ready": true} or {"ready": false}')
        if not user.sip_uri or not self.p.desk.set_available(user.sip_uri, ready):
            raise _error(409, f"{user.name} has no phone in any queue (users' sip_uri)")
        self.p.log.info("console: %s is %s", user.name, "ready" if ready else "paused")
        return _json({"ready": ready})

    async def queue(self, request: web.Request) -> web.Response:
        require(request, "operator")
        store = self.p.tickets()
        queues = []
        for shot in self.p.desk.snapshot():
            data = asdict(shot)
            for waiter in data["waiting"]:
                waiter.update(self._call_json(waiter["call_id"]))
                waiter["urgency"] = None
                waiter["counsellor"] = False
                if store is not None and waiter.get("ticket_id"):
                    ticket = await store.get(int(waiter["ticket_id"]))
                    waiter["urgency"] = ticket.value("urgency") if ticket else None
                    waiter["counsellor"] = counsellor_flagged(ticket.fields) if ticket else False
            queues.append(data)
        return _json({"queues": queues})

    async def pending_callbacks(self, request: web.Request) -> web.Response:
        require(request, "operator")
        queue = self.p.callbacks()
        if queue is None:
            return _json({"callbacks": []})
        found = await queue.list([s for s in CallbackState if s.is_open])
        return _json({"callbacks": [c.to_json() for c in found]})

    async def edit(self, request: web.Request) -> web.Response:
        user = require(request, "operator")
        ticket_id = self._id(request)
        body = await self._body(request)
        changes: dict[str, str] = {}
        fields = body.get("fields", {})
        if not isinstance(fields, dict):
            raise _error(400, '"fields" must be an object of field name -> text')
        for name, value in fields.items():
            if not isinstance(name, str) or EDITABLE.fullmatch(name) is None:
                raise _error(400, f"field name {str(name)[:40]!r}: only a-z and _")
            if not isinstance(value, str) or len(value) > 2000:
                raise _error(400, f"field {name}: want text of at most 2000 characters")
            if name == COUNSELLOR_FIELD and flag_value(value) is None:
                raise _error(400, f'field {name}: want "true" or "false", not {value[:40]!r}')
            changes[name] = value
        status = body.get("status")
        if status is not None:
            if status not in STATUSES:
                raise _error(400, f"status must be one of {', '.join(STATUSES)}")
            changes["status"] = status
        if not changes:
            raise _error(400, "nothing to change")
        store = self._store()
        try:
            ticket = await store.edit(ticket_id, changes, who=user.name)
        except TicketError as exc:
            raise _error(404 if "does not exist" in str(exc) else 400, str(exc)) from None
        cases = self.p.cases()
        if cases is not None and ticket.status in ("open", "in_progress"):
            filing = await cases.file(ticket_id)  # saved: into its matter's case
            if filing.merged:
                self.p.log.info(
                    "console: ticket %d merged into case %d: %s",
                    ticket_id,
                    filing.case.id,
                    filing.why,
                )
        self.p.events.publish("edited", ticket.to_json())
        self.p.log.info(
            "console: %s edited ticket %d (%s)", user.name, ticket_id, ", ".join(changes)
        )
        return _json(ticket.to_json())

    async def duplicates(self, request: web.Request) -> web.Response:
        require(request, "operator")
        ticket = await self._store().get(self._id(request))
        search = self.p.search()
        if ticket is None or search is None:
            raise _error(404, "no such ticket")
        found = await search.duplicates(ticket, window=self.p.duplicate_window)
        shown(request, [d.ticket.id for d in found])
        return _json({"duplicates": [d.to_json() for d in found]})

    async def recording_audio(self, request: web.Request) -> web.StreamResponse:
        """One of the caller's recorded answers, for the operator to listen to
        (the screen says to when its transcript is unreliable)."""
        require(request, "operator")
        ticket = await self._store().get(self._id(request))
        wanted = request.match_info["recording"]
        found = [r for r in ticket.recordings if str(r.id) == wanted] if ticket else []
        if not found:
            raise _error(404, f"no recording {wanted} of this ticket")
        path = Path(found[0].path)
        if not found[0].path or not path.is_file():
            raise _error(404, f"recording {wanted} was deleted (recording_retention_days)")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def mark_duplicate(self, request: web.Request) -> web.Response:
        user = require(request, "operator")
        ticket_id = self._id(request)
        body = await self._body(request)
        other = body.get("of")
        if not isinstance(other, int) or isinstance(other, bool) or other == ticket_id:
            raise _error(400, 'want {"of": <the open ticket\'s id>}')
        store = self._store()
        if await store.get(other) is None:
            raise _error(404, f"no ticket {other}")
        try:
            ticket = await store.edit(
                ticket_id, {"duplicate_of": str(other), "status": "duplicate"}, who=user.name
            )
        except TicketError as exc:
            raise _error(404, str(exc)) from None
        await store.add_note(other, f"ticket {ticket_id} linked as a duplicate", who=user.name)
        self.p.events.publish("edited", ticket.to_json())
        return _json(ticket.to_json())

    # -- admin: tickets and the dashboard -------------------------------------------
    def _filter(self, request: web.Request) -> TicketFilter:
        q = request.query
        limit_text = q.get("limit", "200")
        if _NUMBER.fullmatch(limit_text) is None:
            raise _error(400, f"limit={limit_text[:20]!r}: want a number")
        return TicketFilter(
            category=q.get("category") or None,
            district=q.get("district") or None,
            urgency=q.get("urgency") or None,
            status=q.get("status") or None,
            since=_date(q["from"], "from") if q.get("from") else None,
            until=_date(q["to"], "to") + 86400 if q.get("to") else None,
            text=q.get("q") or None,
            limit=int(limit_text),
        )

    def _search(self) -> TicketSearch:
        search = self.p.search()
        if search is None:
            raise _error(503, "starting up")
        return search

    async def find(self, request: web.Request) -> web.Response:
        require(request, "operator")
        found = await self._search().find(self._filter(request))
        shown(request, [t.id for t in found])
        return _json({"tickets": [dict(t.to_json(), summary=t.summary()) for t in found]})

    async def export(self, request: web.Request) -> web.Response:
        user = require(request, "operator")
        audit = self.p.audit()
        if user.role not in audit.export_roles:  # [audit] export_roles
            raise web.HTTPForbidden(
                text=json.dumps({"error": f"the {user.role} role may not export tickets"}),
                content_type="application/json",
            )
        found = await self._search().find(self._filter(request))
        shown(request, [t.id for t in found])
        text = tickets_csv(found)
        personal = user.role in audit.see_personal  # else numbers masked, no transcripts
        if not personal:
            text = masked_csv(text)
        self.p.log.info(
            "console: %s exported %d tickets as CSV%s",
            user.name,
            len(found),
            "" if personal else " (numbers masked, no transcripts)",
        )
        return web.Response(
            body=text.encode("utf-8"),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": 'attachment; filename="tickets.csv"'},
        )

    async def stats(self, request: web.Request) -> web.Response:
        require(request, "admin")
        days_text = request.query.get("days", "30")
        if _NUMBER.fullmatch(days_text) is None or not 1 <= int(days_text) <= 366:
            raise _error(400, "days must be 1..366")
        now = datetime.datetime.now()
        start = datetime.datetime.combine(
            now.date() - datetime.timedelta(days=int(days_text) - 1), datetime.time()
        )
        counts = await self._search().counts(start.timestamp(), now.timestamp() + 1)
        return _json({"days": int(days_text), **counts})

    # -- admin: prompts ---------------------------------------------------------------
    def _dialect_key(self, request: web.Request) -> tuple[str, str]:
        dialect, key = request.match_info["dialect"], request.match_info["key"]
        if dialect not in self.p.dialects:
            raise _error(404, f"dialect {dialect[:20]!r} is not offered")
        if _PROMPT_KEY.fullmatch(key) is None or key not in self.p.prompt_keys():
            raise _error(404, f"no prompt {key[:64]!r} in the dial plan")
        return dialect, key

    async def prompt_status(self, request: web.Request) -> web.Response:
        require(request, "admin")
        texts = self.p.prompt_texts()
        rows = voice_status(
            voices_dir=self.p.voices_dir,
            dialects=self.p.dialects,
            prompt_keys=self.p.prompt_keys(),
            synthesis_voices=self.p.voices,
            texts=set(texts),
        )
        said = [{**asdict(r), "text": self._words(r.key, r.dialect, texts)} for r in rows]
        return _json({"dialects": list(self.p.dialects), "prompts": said})

    def _words(self, key: str, dialect: str, texts: Mapping[str, str]) -> str:
        """What the prompt says in ``dialect``: the wording it was built from (a
        dialect's own, else the plan's), or the plan's text before a build."""
        try:
            built = self.p.prompts.get(key, 1.0, dialect).text
        except PromptError:
            built = ""
        return built or texts.get(key, "")

    async def prompt_audio(self, request: web.Request) -> web.Response:
        require(request, "admin")
        dialect, key = self._dialect_key(request)
        try:
            speed = float(request.query.get("speed", "1"))
            prompt = self.p.prompts.get(key, speed, dialect)
        except (ValueError, PromptError) as exc:
            raise _error(404, str(exc)) from None
        out = io.BytesIO()
        sf.write(out, prompt.pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return web.Response(body=out.getvalue(), content_type="audio/wav")

    async def upload_prompt(self, request: web.Request) -> web.Response:
        user = require(request, "admin")
        dialect, key = self._dialect_key(request)
        if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
            raise _error(413, f"the recording is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        data = await self._upload_bytes(request)
        loop = asyncio.get_running_loop()
        check = await loop.run_in_executor(None, lambda: check_recording(data, name=key))
        if not check.accepted:
            self.p.log.warning(
                "console: %s's recording for %s/%s rejected", user.name, dialect, key
            )
            return _json({"accepted": False, "reasons": list(check.reasons)}, status=422)
        try:
            path = await loop.run_in_executor(
                None,
                lambda: install_recording(
                    check, voices_dir=self.p.voices_dir, dialect=dialect, key=key
                ),
            )
        except VoiceImportError as exc:
            raise _error(400, str(exc)) from None
        await self.p.rebuild_prompts()
        self.p.log.info("console: %s installed %s", user.name, path)
        return _json({"accepted": True, "changes": list(check.changes), "path": str(path)})

    async def _upload_bytes(self, request: web.Request) -> bytes:
        """The file of a multipart upload (field "file"), at most MAX_UPLOAD_BYTES."""
        if not request.content_type.startswith("multipart/"):
            raise _error(400, "send the recording as multipart/form-data, field 'file'")
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                raise _error(400, "no field 'file' in the upload")
            if getattr(part, "name", None) != "file":
                continue
            chunks: list[bytes] = []
            size = 0
            while chunk := await part.read_chunk(64 * 1024):  # type: ignore[union-attr]
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise _error(413, f"the recording is over {MAX_UPLOAD_BYTES // 1048576} MB")
                chunks.append(chunk)
            return b"".join(chunks)

    async def synthesise_prompt(self, request: web.Request) -> web.Response:
        """Back to speech synthesis: the recording (if any) is set aside."""
        user = require(request, "admin")
        dialect, key = self._dialect_key(request)
        if dialect not in self.p.voices:
            raise _error(409, f"{dialect} has no synthesis voice; callers hear mandarin")
        moved = []
        folder = self.p.voices_dir / dialect
        if folder.is_dir():
            aside = folder / ".replaced"
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            for path in folder.glob(f"{key}.*"):
                aside.mkdir(exist_ok=True)
                kept = aside / f"{path.stem}.{stamp}{path.suffix}"  # earlier ones stay
                path.replace(kept)
                moved.append(kept.name)
        await self.p.rebuild_prompts()
        self.p.log.info("console: %s re-synthesised %s/%s", user.name, dialect, key)
        return _json({"synthesised": True, "set_aside": moved})

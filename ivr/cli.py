"""`ivr serve | call | dialplan check | voices build`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ivr.config import ConfigError, Settings, load_settings
from ivr.logs import setup_logging

if TYPE_CHECKING:
    from ivr.store import Database


def _settings(path: Path) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"ivr: bad config: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    except FileNotFoundError as exc:
        print(f"ivr: config file not found: {path}", file=sys.stderr)
        raise SystemExit(2) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    from ivr.dialplan.load import DialPlanError
    from ivr.node import PidFile
    from ivr.prefill import PrefillDataError
    from ivr.server import serve
    from ivr.speech import SpeechModelError
    from ivr.startup import StartupError

    settings = _settings(args.config)
    log = setup_logging(settings.logging.level, settings.logging.format)
    try:
        with PidFile(settings.node.pid_file):  # `ivr drain` finds this node by it
            asyncio.run(serve(settings, log))
    except KeyboardInterrupt:
        return 0
    except DialPlanError as exc:
        problem = f"the dial plan has errors, not starting:\n{exc}"
    except SpeechModelError as exc:
        problem = f"no usable speech model, not starting:\n{exc}"
    except PrefillDataError as exc:
        problem = f"bad ticket data file, not starting:\n{exc}"
    except (StartupError, OSError) as exc:
        problem = f"cannot start: {exc}"
    else:
        return 0
    log.error("ivr: %s", problem)
    print(f"ivr: {problem}", file=sys.stderr)
    return 2


def cmd_drain(args: argparse.Namespace) -> int:
    from ivr.node import drain

    settings = _settings(args.config)
    wait = None if args.no_wait else settings.node.drain_timeout + 30.0
    sip = (settings.sip.host, settings.sip.port)
    return drain(settings.node.pid_file, sip=sip, wait=wait, now=args.now, say=print)


def cmd_call(args: argparse.Namespace) -> int:
    from ivr.trial_call import TrialOptions, place_call, summary

    log = setup_logging("WARNING" if not args.verbose else "DEBUG", "text")
    options = TrialOptions(
        target=args.target,
        play=args.play,
        digits=args.digits,
        digit_delay=args.digit_delay,
        digit_gap=args.digit_gap,
        dtmf_mode=args.dtmf_mode,
        duration=args.duration,
        record=args.record,
        codecs=tuple(c.strip().upper() for c in args.codecs.split(",")),
        caller=args.caller,
    )
    result = asyncio.run(place_call(options, log))
    print(json.dumps(summary(result), ensure_ascii=False))
    if result.status != 200:
        print(f"ivr call: {result.status} {result.reason}", file=sys.stderr)
    return 0 if result.status == 200 else 1


def cmd_dialplan_check(args: argparse.Namespace) -> int:
    from ivr.dialplan.check import check_command
    from ivr.prompts import PromptLibrary

    config: Path = args.config
    settings = _settings(config) if config.exists() else None
    queues = set(settings.queues) if settings else None
    recorded: set[str] = set()
    if settings is not None:
        recorded = PromptLibrary.from_settings(settings).recorded_keys()
    unchecked = None
    if settings is None:
        unchecked = (
            f"queue names, recorded prompts, dialects and speeds NOT checked: no config "
            f"at {config.resolve()} (give the server's with --config PATH)"
        )
    return check_command(
        args.file,
        queues,
        recorded,
        dialects=settings.dialects.offered if settings else None,
        speeds=settings.elderly.speeds if settings else None,
        unchecked=unchecked,
    )


def cmd_voices_build(args: argparse.Namespace) -> int:
    from ivr.dialplan.load import DialPlanError, load_dialplan
    from ivr.prompts import PromptLibrary, plan_prompt_texts

    settings = _settings(args.config)
    setup_logging(settings.logging.level, "text")
    library = PromptLibrary.from_settings(settings)
    try:
        plan = load_dialplan(
            settings.dialplan.file,
            queues=set(settings.queues),
            recorded_prompts=library.recorded_keys(),
            dialects=settings.dialects.offered,
            speeds=settings.elderly.speeds,
        )
    except DialPlanError as exc:
        print(exc, file=sys.stderr)
        return 1
    from ivr.counsellors import prompt_texts as counsellor_prompts

    texts = plan_prompt_texts(plan, settings.callbacks.greeting)
    texts.update(counsellor_prompts(settings.counsellors))
    for line in asyncio.run(library.build(texts, plan.dialect_prompts)):
        print(line)
    return 0


def _dialect_setup(settings: Settings) -> tuple[tuple[str, ...], dict[str, str]]:
    """(the dialects offered, mandarin first: everyone's fallback; the espeak-ng
    voice per dialect), from config.toml's [dialects]."""
    from ivr.dialects import MANDARIN

    section = settings.dialects
    return tuple(dict.fromkeys((MANDARIN, *section.offered))), dict(section.voices)


def _plan_prompts(settings: Settings) -> tuple[set[str], set[str]] | None:
    """(every prompt key of the dial plan, the keys it has text for); None
    (after saying why) when the dial plan has errors."""
    from ivr.dialplan.load import DialPlanError, load_dialplan
    from ivr.prompts import PromptLibrary, plan_prompt_keys, plan_prompt_texts

    try:
        plan = load_dialplan(
            settings.dialplan.file,
            queues=set(settings.queues),
            recorded_prompts=PromptLibrary.from_settings(settings).recorded_keys(),
            dialects=settings.dialects.offered,
            speeds=settings.elderly.speeds,
        )
    except DialPlanError as exc:
        print(f"ivr: the dial plan has errors:\n{exc}", file=sys.stderr)
        return None
    from ivr.counsellors import prompt_texts as counsellor_prompts

    texts = plan_prompt_texts(plan, settings.callbacks.greeting)
    texts.update(counsellor_prompts(settings.counsellors))
    return plan_prompt_keys(plan, texts), set(texts)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cmd_voices_status(args: argparse.Namespace) -> int:
    from ivr.voice_recordings import summary, voice_status

    settings = _settings(args.config)
    prompts = _plan_prompts(settings)
    if prompts is None:
        return 2
    keys, texts = prompts
    dialects, voices = _dialect_setup(settings)
    statuses = voice_status(
        voices_dir=settings.prompts.voices_dir,
        dialects=dialects,
        prompt_keys=keys,
        synthesis_voices=voices,
        texts=texts,
    )
    width = max((len(s.key) for s in statuses), default=3)
    print(f"{'dialect':<9} {'key':<{width}} {'state':<12} source")
    for s in statuses:
        note = _shown(s.path) if s.path is not None else s.note
        print(f"{s.dialect:<9} {s.key:<{width}} {s.state:<12} {note}")
    print()
    for dialect in dialects:
        print(summary(statuses, dialect))
    return 0


def cmd_voices_import(args: argparse.Namespace) -> int:
    from ivr.voice_recordings import VoiceImportError, check_dialect, import_folder

    try:
        check_dialect(args.dialect)
    except VoiceImportError as exc:
        print(f"ivr: {exc}", file=sys.stderr)
        return 2
    if not args.dir.is_dir():
        print(f"ivr: not a folder: {args.dir}", file=sys.stderr)
        return 2
    settings = _settings(args.config)
    prompts = _plan_prompts(settings)
    if prompts is None:
        return 2
    try:
        results = import_folder(
            args.dir,
            voices_dir=settings.prompts.voices_dir,
            dialect=args.dialect,
            known_keys=prompts[0],
        )
    except VoiceImportError as exc:
        print(f"ivr: {exc}", file=sys.stderr)
        return 2
    if args.dialect not in settings.dialects.offered and args.dialect != "mandarin":
        print(
            f"ivr: note: {args.dialect} is not in [dialects] offered: "
            "callers cannot choose it until it is",
            file=sys.stderr,
        )
    for r in results:
        if r.accepted and r.installed is not None:
            notes = (["replaced the previous recording"] if r.replaced else []) + list(r.changes)
            detail = f" ({', '.join(notes)})" if notes else ""
            print(f"installed {r.file.name} -> {_shown(r.installed)}{detail}")
        else:
            print(f"rejected {r.file.name}: {'; '.join(r.reasons)}")
    rejected = sum(not r.accepted for r in results)
    print(f"{len(results) - rejected} installed, {rejected} rejected")
    if not results:
        print(f"ivr: no files in {args.dir}", file=sys.stderr)
    return 1 if rejected else 0


def cmd_callers(args: argparse.Namespace) -> int:
    from ivr.caller_profiles import CallerProfiles
    from ivr.store import open_store

    settings = _settings(args.config)

    async def run() -> str:
        db = await open_store(settings.storage.location)
        try:
            profiles = CallerProfiles(db)
            if args.callers_command == "forget":
                gone = await profiles.forget(args.number)
                await _audited(db, "callers.forget", "caller", args.number, "" if gone else "none")
                return "forgotten" if gone else "nothing was remembered for that number"
            profile = await profiles.get(args.number)
            if profile is None:
                return "nothing remembered"
            return json.dumps(profile.__dict__, ensure_ascii=False)
        finally:
            await db.close()

    print(asyncio.run(run()))
    return 0


async def _audited(
    db: Database, action: str, object_type: str, object_id: str, detail: str
) -> None:
    """A change made on the machine, in the audit log as its user's (role cli)."""
    import getpass

    from ivr.audit import AuditLog

    await AuditLog(db, node="cli").record(
        action=action, outcome="allowed", user=getpass.getuser(), role="cli",
        object_type=object_type, object_id=object_id, address="local", detail=detail,
    )  # fmt: skip


def cmd_import_elderly(args: argparse.Namespace) -> int:
    import csv
    import re

    from ivr.caller_profiles import CallerProfiles
    from ivr.store import open_store

    settings = _settings(args.config)
    numbers: list[str] = []
    bad: list[str] = []
    try:
        with args.file.open(newline="", encoding="utf-8-sig") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or not row[0].strip():
                    continue
                number = re.sub(r"[\s-]", "", row[0])
                if re.fullmatch(r"\+?[0-9]{5,20}", number):
                    numbers.append(number)
                elif line_no > 1:  # a first line that is not a number is a header
                    bad.append(f"{args.file}:{line_no}: {row[0]!r} is not a phone number")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        print(f"ivr: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    for problem in bad:
        print(problem, file=sys.stderr)

    async def run() -> None:
        db = await open_store(settings.storage.location)
        try:
            profiles = CallerProfiles(db)
            for number in numbers:
                await profiles.remember(number, speed=settings.elderly.speed)
            detail = f"{len(numbers)} number(s) marked elderly, {len(bad)} line(s) skipped"
            await _audited(db, "callers.import_elderly", "file", str(args.file), detail)
        finally:
            await db.close()

    asyncio.run(run())
    print(f"{len(numbers)} number(s) marked elderly; {len(bad)} line(s) skipped")
    return 0 if not bad else 1


def _new_password(args: argparse.Namespace) -> str:
    """The password from stdin (one line) with --password-stdin, else asked twice."""
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise ValueError("the two passwords differ; nothing was changed")
    return first


def cmd_users(args: argparse.Namespace) -> int:
    """`ivr users add | list | passwd | unlock`: the web console's accounts."""
    import getpass
    import time

    from ivr.audit import AccessGuard, AuditLog
    from ivr.store import DatabaseError, open_store
    from ivr.tickets.events import TicketEvents
    from ivr.web.auth import NAME_PATTERN, ROLES, Accounts, AuthError

    settings = _settings(args.config)
    if args.users_command == "add":  # say what is wrong before asking for a password
        if args.role not in ROLES:
            print(f"ivr: role {args.role!r} is not one of {', '.join(ROLES)}", file=sys.stderr)
            return 1
        if NAME_PATTERN.fullmatch(args.name) is None:
            print(
                f"ivr: name {args.name!r} must be 2 to 32 of a-z, 0-9, '_', '.', '-'",
                file=sys.stderr,
            )
            return 1
    try:
        password = _new_password(args) if args.users_command in ("add", "passwd") else ""
    except (ValueError, EOFError, KeyboardInterrupt) as exc:
        print(f"ivr: {str(exc) or 'no password given'}", file=sys.stderr)
        return 1

    async def run() -> list[str]:
        db = await open_store(settings.storage.location)
        try:
            accounts = Accounts(db)
            # a change made here is audited as made by this machine's user (ivr/audit.py)
            audit = AuditLog(db, node="cli")
            me = getpass.getuser()
            if args.users_command == "add":
                user = await accounts.add_user(args.name, password, args.role, sip_uri=args.sip_uri)
                await audit.record(
                    action="users.add", outcome="allowed", object_type="user",
                    object_id=user.name, detail=f"role {user.role}", user=me, role="cli",
                    address="local",
                )  # fmt: skip
                return [f"added {user.role} {user.name}"]
            if args.users_command == "passwd":
                await accounts.set_password(args.name, password)
                await audit.record(
                    action="users.passwd", outcome="allowed", object_type="user",
                    object_id=args.name, user=me, role="cli", address="local",
                )  # fmt: skip
                return [f"password of {args.name} changed; their sessions were ended"]
            if args.users_command == "unlock":  # e.g. the only admin was locked
                kind = "address" if args.address else "account"
                subject = args.address or args.name
                if not subject:
                    raise AuthError("name the account to unlock, or --address ADDRESS")
                guard = AccessGuard(db, audit, TicketEvents(), lambda: settings.audit)
                if not await guard.unlock(kind, subject, by=me, role="cli", address="local"):
                    raise AuthError(f"{kind} {subject} is not locked")
                return [f"{kind} {subject} unlocked"]
            users = await accounts.users()
            width = max((len(u.name) for u in users), default=4)
            lines = [f"{'name':<{width}}  {'role':<8}  {'created':<16}  sip_uri"]
            for u in users:
                created = time.strftime("%Y-%m-%d %H:%M", time.localtime(u.created_at))
                lines.append(f"{u.name:<{width}}  {u.role:<8}  {created:<16}  {u.sip_uri or ''}")
            return lines
        finally:
            await db.close()

    try:
        lines = asyncio.run(run())
    except (AuthError, DatabaseError) as exc:
        print(f"ivr: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr", description="12345 hotline IVR")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("config.toml"),
        help="config file (default: ./config.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the IVR")
    serve.set_defaults(func=cmd_serve)

    draining = sub.add_parser(
        "drain",
        help="drain the node `ivr serve` runs with this config: new calls and OPTIONS "
        "get 503, calls in progress finish, then it exits",
    )
    draining.add_argument(
        "--no-wait", action="store_true", help="return at once instead of waiting for the exit"
    )
    draining.add_argument(
        "--now", action="store_true", help="end the node's calls at once instead of waiting"
    )
    draining.set_defaults(func=cmd_drain)

    call = sub.add_parser("call", help="place a trial call (a test caller)")
    call.add_argument("target", help="SIP URI, e.g. sip:12345@127.0.0.1:5060")
    call.add_argument("--play", type=Path, help="WAV to play as the caller's voice")
    call.add_argument("--digits", default="", help="keys to press, e.g. 10")
    call.add_argument("--digit-delay", type=float, default=2.0, help="seconds before the first key")
    call.add_argument("--digit-gap", type=float, default=1.0, help="seconds between keys")
    call.add_argument(
        "--dtmf-mode",
        default="rfc4733",
        choices=("rfc4733", "info", "inband", "rfc4733+inband", "rfc4733+info"),
        help="how keys are sent; two joined by + sends each key both ways",
    )
    call.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="hang up after N seconds; also give up when not answered within N seconds",
    )
    call.add_argument("--record", type=Path, help="write what the caller heard to this WAV")
    call.add_argument("--codecs", default="PCMU,PCMA", help="codecs to offer, in order")
    call.add_argument("--caller", default="13800138000", help="caller number (From user)")
    call.add_argument("-v", "--verbose", action="store_true")
    call.set_defaults(func=cmd_call)

    dialplan = sub.add_parser("dialplan", help="dial plan tools")
    dialplan_sub = dialplan.add_subparsers(dest="dialplan_command", required=True)
    check = dialplan_sub.add_parser("check", help="validate a dial plan file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_dialplan_check)

    voices = sub.add_parser("voices", help="prompt audio")
    voices_sub = voices.add_subparsers(dest="voices_command", required=True)
    build = voices_sub.add_parser("build", help="render every prompt of the dial plan")
    build.set_defaults(func=cmd_voices_build)
    status = voices_sub.add_parser(
        "status", help="per dialect and prompt: recorded, synthesised or missing"
    )
    status.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config file")
    status.set_defaults(func=cmd_voices_status)
    importing = voices_sub.add_parser(
        "import", help="check, convert and install a folder of recordings (<prompt key>.wav)"
    )
    importing.add_argument("dir", type=Path, help="folder of recordings, one per prompt key")
    importing.add_argument("--dialect", required=True, help="dialect group, e.g. yue")
    importing.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config file")
    importing.set_defaults(func=cmd_voices_import)

    callers = sub.add_parser("callers", help="caller profiles (remembered per number)")
    callers_sub = callers.add_subparsers(dest="callers_command", required=True)
    for name, text in (("show", "show what is remembered"), ("forget", "forget a number")):
        one = callers_sub.add_parser(name, help=text)
        one.add_argument("number")
        one.set_defaults(func=cmd_callers)
    registry = callers_sub.add_parser(
        "import-elderly", help="mark the numbers in a CSV (first column) as elderly callers"
    )
    registry.add_argument("file", type=Path)
    registry.set_defaults(func=cmd_import_elderly)

    users = sub.add_parser("users", help="web console accounts (operators, admins)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    users_add = users_sub.add_parser("add", help="add a user")
    users_add.add_argument("name", help="2-32 of a-z 0-9 _ . -")
    users_add.add_argument(
        "--role", required=True, help="reviewer, department, operator, supervisor or admin"
    )
    users_add.add_argument("--sip-uri", help="the operator's phone, e.g. sip:op1@10.0.0.5")
    users_passwd = users_sub.add_parser("passwd", help="set a user's password (ends sessions)")
    users_passwd.add_argument("name")
    for one in (users_add, users_passwd):
        one.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )
    users_list = users_sub.add_parser("list", help="list the users")
    users_unlock = users_sub.add_parser(
        "unlock", help="unlock an account or address locked for abnormal access ([audit])"
    )
    users_unlock.add_argument("name", nargs="?", default="", help="the account")
    users_unlock.add_argument("--address", help="unlock log-ins from this address instead")
    for one in (users_add, users_passwd, users_list, users_unlock):
        one.set_defaults(func=cmd_users)

    from ivr.call_history import add_calls_commands

    add_calls_commands(sub)

    from ivr.callbacks.cli import add_callback_commands
    from ivr.callbacks.settings import policy_for_config

    add_callback_commands(sub, policy_for=policy_for_config)
    from ivr.followups.cli import add_followup_commands

    add_followup_commands(sub)
    from ivr.tickets.dispatch_cli import add_dispatch_commands

    add_dispatch_commands(sub)
    from ivr.enterprises import add_enterprise_commands

    add_enterprise_commands(sub)
    from ivr.quality.cli import add_quality_commands

    add_quality_commands(sub)
    _config_after_the_command(parser)
    return parser


def _config_after_the_command(parser: argparse.ArgumentParser) -> None:
    """Let every (sub)command take ``--config`` after its name too
    (`ivr serve --config x.toml` as well as `ivr --config x.toml serve`).

    SUPPRESS as the default: a subcommand without it keeps the value (or the
    default) of the top-level option.
    """
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in set(action.choices.values()):
            if "--config" not in child._option_string_actions:
                child.add_argument(
                    "--config", type=Path, default=argparse.SUPPRESS, help="config file"
                )
            _config_after_the_command(child)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.captureWarnings(True)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

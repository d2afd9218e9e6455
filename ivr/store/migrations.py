"""The schema, as versioned migrations shared by both back ends.

Each migration is written once, in SQLite's dialect; ``for_postgres`` turns a
statement into PostgreSQL's (identity ids, BIGINT, DOUBLE PRECISION, a JSON
check by cast).  Versions are 1, 2, 3 ... with no gaps, the same on SQLite
and PostgreSQL, recorded in ``schema_migrations``; a database at a higher
version than the program knows is refused (an older node never joins a newer
cluster).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int  # 1, 2, 3 ... with no gaps
    description: str
    statements: tuple[str, ...]  # run one by one, in one transaction
    # run after ``statements``, as written, on that back end only (what the two
    # spell too differently for ``for_postgres``, such as triggers)
    sqlite_statements: tuple[str, ...] = ()
    postgres_statements: tuple[str, ...] = ()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "calls: one record per call (path through the dial plan, queue, outcome)",
        (
            """
            CREATE TABLE calls (
                call_id      TEXT PRIMARY KEY NOT NULL,
                caller       TEXT NOT NULL,
                dialled      TEXT NOT NULL,
                started_at   REAL NOT NULL,
                answered_at  REAL,
                ended_at     REAL,
                path         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(path)),
                digits       TEXT NOT NULL DEFAULT '',
                queue        TEXT,
                operator     TEXT,
                outcome      TEXT,
                end_reason   TEXT,
                codec        TEXT,
                plan_version TEXT
            )
            """,
            "CREATE INDEX calls_by_started_at ON calls (started_at)",
            "CREATE INDEX calls_by_caller ON calls (caller, started_at)",
        ),
    ),
    Migration(
        2,
        "tickets (工单) with their history and recordings; the work-order webhook outbox",
        (
            """
            CREATE TABLE tickets (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                call_id     TEXT NOT NULL,
                caller      TEXT NOT NULL,
                status      TEXT NOT NULL DEFAULT 'open',
                fields      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(fields)),
                transcript  TEXT NOT NULL DEFAULT '',
                notes       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(notes)),
                emergency   TEXT,
                created_at  REAL NOT NULL,
                updated_at  REAL NOT NULL
            )
            """,
            "CREATE INDEX tickets_by_call ON tickets (call_id)",
            "CREATE INDEX tickets_by_caller ON tickets (caller, created_at)",
            """
            CREATE TABLE ticket_history (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                ticket_id  INTEGER NOT NULL REFERENCES tickets (id),
                at         REAL NOT NULL,
                who        TEXT NOT NULL,
                what       TEXT NOT NULL,
                old_value  TEXT,
                new_value  TEXT
            )
            """,
            "CREATE INDEX ticket_history_by_ticket ON ticket_history (ticket_id, at)",
            """
            CREATE TABLE ticket_recordings (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                ticket_id  INTEGER NOT NULL REFERENCES tickets (id),
                path       TEXT NOT NULL,
                seconds    REAL NOT NULL,
                ending     TEXT NOT NULL,
                transcript TEXT,
                created_at REAL NOT NULL
            )
            """,
            "CREATE INDEX ticket_recordings_by_ticket ON ticket_recordings (ticket_id)",
            """
            CREATE TABLE work_order_outbox (
                id           INTEGER PRIMARY KEY AUTOINCREMENT,
                ticket_id    INTEGER NOT NULL REFERENCES tickets (id),
                payload      TEXT NOT NULL CHECK (json_valid(payload)),
                attempts     INTEGER NOT NULL DEFAULT 0,
                next_at      REAL NOT NULL,
                last_error   TEXT,
                delivered_at REAL,
                created_at   REAL NOT NULL
            )
            """,
            "CREATE INDEX work_order_outbox_due ON work_order_outbox (delivered_at, next_at)",
        ),
    ),
    Migration(
        3,
        "callbacks: the dropped-call callback queue (one open per number) and its transitions",
        (
            """
            CREATE TABLE callbacks (
                id                   INTEGER PRIMARY KEY AUTOINCREMENT,
                number               TEXT NOT NULL CHECK (number <> ''),
                call_id              TEXT NOT NULL,
                first_call_id        TEXT NOT NULL,
                ticket_id            INTEGER,
                reason               TEXT NOT NULL
                    CHECK (reason IN ('abandoned', 'dropped', 'operator_failed')),
                state                TEXT NOT NULL CHECK (state IN ('pending', 'dialing',
                    'connected', 'no_answer', 'busy', 'failed', 'cancelled', 'done')),
                priority             INTEGER NOT NULL,
                elderly              INTEGER NOT NULL DEFAULT 0 CHECK (elderly IN (0, 1)),
                emergency            INTEGER NOT NULL DEFAULT 0 CHECK (emergency IN (0, 1)),
                urgency              TEXT CHECK (urgency IN ('紧急', '较急', '一般')),
                original_enqueued_at REAL,
                original_position    INTEGER,
                attempts             INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
                next_at              REAL NOT NULL,
                last_error           TEXT,
                created_at           REAL NOT NULL,
                updated_at           REAL NOT NULL
            )
            """,
            """
            CREATE UNIQUE INDEX callbacks_one_open_per_number ON callbacks (number)
            WHERE state IN ('pending', 'dialing', 'connected', 'no_answer', 'busy')
            """,
            "CREATE INDEX callbacks_due ON callbacks (state, next_at)",
            "CREATE INDEX callbacks_by_number ON callbacks (number, created_at)",
            """
            CREATE TABLE callback_events (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                callback_id INTEGER NOT NULL REFERENCES callbacks (id),
                at          REAL NOT NULL,
                from_state  TEXT,
                to_state    TEXT NOT NULL,
                detail      TEXT NOT NULL DEFAULT ''
            )
            """,
            "CREATE INDEX callback_events_by_callback ON callback_events (callback_id, id)",
            "CREATE INDEX callback_events_attempts ON callback_events (to_state, at)",
        ),
    ),
    Migration(
        4,
        "caller profiles: how the last call from a number ended (speed, dialect, ticket)",
        (
            """
            CREATE TABLE caller_profiles (
                number         TEXT PRIMARY KEY NOT NULL,
                speed          REAL NOT NULL DEFAULT 1.0 CHECK (speed > 0 AND speed <= 1),
                dialect        TEXT,
                last_ticket_id INTEGER,
                updated_at     REAL NOT NULL
            )
            """,
        ),
    ),
    Migration(
        5,
        "caller profiles: 亲友代办 (whom a relative reports for) and whom to call back",
        (
            "ALTER TABLE caller_profiles ADD COLUMN beneficiary TEXT",  # JSON: name, phone, address
            "ALTER TABLE caller_profiles ADD COLUMN callback_to TEXT",  # caller | beneficiary
        ),
    ),
    Migration(
        6,
        "web console users (operator, admin) and their sessions",
        (
            """
            CREATE TABLE users (
                id            INTEGER PRIMARY KEY,
                name          TEXT NOT NULL UNIQUE,
                role          TEXT NOT NULL CHECK (role IN ('operator', 'admin')),
                password_hash TEXT NOT NULL,
                sip_uri       TEXT,          -- an operator's phone (their screen pops for it)
                disabled      INTEGER NOT NULL DEFAULT 0,
                created_at    REAL NOT NULL
            )
            """,
            """
            CREATE TABLE sessions (
                token_hash TEXT PRIMARY KEY NOT NULL,  -- sha256 of the cookie's token
                user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                csrf       TEXT NOT NULL,
                created_at REAL NOT NULL,
                expires_at REAL NOT NULL
            )
            """,
            "CREATE INDEX sessions_by_user ON sessions (user_id)",
        ),
    ),
    Migration(
        7,
        "dial plan versions: every published plan, for history and rollback",
        (
            """
            CREATE TABLE dialplan_versions (
                id           INTEGER PRIMARY KEY,
                version      TEXT NOT NULL,    -- first 12 hex digits of the source's sha256
                source       TEXT NOT NULL,    -- the TOML as published
                author       TEXT NOT NULL,
                note         TEXT NOT NULL DEFAULT '',
                published_at REAL NOT NULL
            )
            """,
        ),
    ),
    Migration(
        8,
        "conversation recordings: the caller and the operator, one stereo WAV a bridged call",
        (
            """
            CREATE TABLE conversation_recordings (
                id         INTEGER PRIMARY KEY,
                call_id    TEXT NOT NULL,
                operator   TEXT NOT NULL,
                path       TEXT NOT NULL,   -- '' once deleted by the retention period
                started_at REAL NOT NULL,
                seconds    REAL
            )
            """,
            "CREATE INDEX conversation_recordings_by_call ON conversation_recordings (call_id)",
            "CREATE INDEX conversation_recordings_by_start ON conversation_recordings (started_at)",
        ),
    ),
    Migration(
        9,
        "ticket recordings: a transcript that reads as the recogniser's loop is marked unreliable",
        (
            # why the transcript is unreliable (ivr.speech.repetition); NULL: it reads as speech
            "ALTER TABLE ticket_recordings ADD COLUMN transcript_unreliable TEXT",
        ),
    ),
    Migration(
        10,
        "cluster: nodes and their heartbeats, the one waiting line, operators' states, "
        "the node holding each call, leases on callbacks and work orders",
        (
            """
            CREATE TABLE nodes (
                node_id      TEXT PRIMARY KEY NOT NULL,
                sip_address  TEXT NOT NULL DEFAULT '',
                web_address  TEXT NOT NULL DEFAULT '',
                started_at   REAL NOT NULL,
                heartbeat_at REAL NOT NULL,   -- epoch s; silent for node_timeout = lost
                state        TEXT NOT NULL DEFAULT 'up'
                    CHECK (state IN ('up', 'draining', 'stopped', 'lost'))
            )
            """,
            # every caller waiting for an operator, on any node: one line per queue,
            # callers called back first (priority 1), then in the order they joined
            """
            CREATE TABLE queue_waiters (
                id        INTEGER PRIMARY KEY AUTOINCREMENT,
                call_id   TEXT NOT NULL UNIQUE,
                queue     TEXT NOT NULL,
                node      TEXT NOT NULL,
                caller    TEXT NOT NULL,
                skill     TEXT,
                priority  INTEGER NOT NULL DEFAULT 0 CHECK (priority IN (0, 1)),
                joined_at REAL NOT NULL,
                ringing   TEXT,                  -- the operator being rung for them now
                skipped   TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(skipped))
            )
            """,
            "CREATE INDEX queue_waiters_in_line ON queue_waiters (queue, priority, id)",
            # an operator's phone: rung by one node at a time (node + state under the
            # store's lock); a dead node's ringing/talking/wrap-up frees itself
            """
            CREATE TABLE operator_states (
                uri         TEXT PRIMARY KEY NOT NULL,
                state       TEXT NOT NULL DEFAULT 'free'
                    CHECK (state IN ('free', 'ringing', 'talking', 'wrap_up')),
                paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
                call_id     TEXT,
                node        TEXT,
                free_at     REAL,                -- wrap-up: free from this time on
                calls_taken INTEGER NOT NULL DEFAULT 0,
                updated_at  REAL NOT NULL
            )
            """,
            "ALTER TABLE calls ADD COLUMN node TEXT",  # the node that answered the call
            "CREATE INDEX calls_by_node ON calls (node, ended_at)",
            "ALTER TABLE callbacks ADD COLUMN lease_node TEXT",  # the node dialling it
            "ALTER TABLE callbacks ADD COLUMN lease_until REAL",
            "ALTER TABLE work_order_outbox ADD COLUMN lease_node TEXT",
            "ALTER TABLE work_order_outbox ADD COLUMN lease_until REAL",
        ),
    ),
    Migration(
        11,
        "cluster: console events relayed between nodes (a screen pop on every node)",
        (
            """
            CREATE TABLE console_events (
                id      INTEGER PRIMARY KEY AUTOINCREMENT,
                at      REAL NOT NULL,
                node    TEXT NOT NULL,
                kind    TEXT NOT NULL,
                payload TEXT NOT NULL CHECK (json_valid(payload))
            )
            """,
            "CREATE INDEX console_events_by_time ON console_events (at)",
        ),
    ),
    Migration(
        12,
        "audit: every read of a ticket or recording, every export and admin change, "
        "append-only; accounts and addresses locked for abnormal access",
        (
            # append-only: the program has no UPDATE or DELETE of it, and the triggers
            # below refuse them (docs/decisions.md, "The audit log")
            """
            CREATE TABLE audit_log (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                at          REAL NOT NULL,
                node        TEXT NOT NULL DEFAULT '',
                user_name   TEXT NOT NULL DEFAULT '',   -- '' for nobody logged in
                role        TEXT NOT NULL DEFAULT '',
                action      TEXT NOT NULL,              -- ticket.read, plans.publish ...
                object_type TEXT NOT NULL DEFAULT '',
                object_id   TEXT NOT NULL DEFAULT '',
                items       INTEGER NOT NULL DEFAULT 0 CHECK (items >= 0),  -- objects shown
                address     TEXT NOT NULL DEFAULT '',   -- the client's address
                outcome     TEXT NOT NULL CHECK (outcome IN ('allowed', 'refused', 'failed')),
                status      INTEGER,                    -- the HTTP status answered
                detail      TEXT NOT NULL DEFAULT ''    -- phone numbers masked
            )
            """,
            "CREATE INDEX audit_log_by_time ON audit_log (at)",
            # covers the thresholds' count (ivr/audit.py AuditLog.counted)
            "CREATE INDEX audit_log_by_user ON audit_log (user_name, outcome, action, at, items)",
            "CREATE INDEX audit_log_by_address ON audit_log (address, action, at)",
            "CREATE INDEX audit_log_by_object ON audit_log (object_type, object_id)",
            "ALTER TABLE users ADD COLUMN locked_at REAL",  # NULL: not locked
            "ALTER TABLE users ADD COLUMN locked_reason TEXT",
            """
            CREATE TABLE address_locks (
                address   TEXT PRIMARY KEY NOT NULL,
                locked_at REAL NOT NULL,
                reason    TEXT NOT NULL
            )
            """,
        ),
        sqlite_statements=(
            """
            CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: a row is never changed'); END
            """,
            """
            CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: a row is never deleted'); END
            """,
        ),
        postgres_statements=(
            """
            CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
                    USING ERRCODE = 'restrict_violation';
            END
            $$
            """,
            """
            CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
            """,
            """
            CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()
            """,
            "REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC",
        ),
    ),
    Migration(
        13,
        "follow-up calls (回访) after a ticket is closed, with their history",
        (
            # one row per closing of a ticket; dialled like a callback (leased by
            # the node dialling it), answered with 满意 / 基本满意 / 不满意, or no_answer
            """
            CREATE TABLE followups (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                ticket_id   INTEGER NOT NULL REFERENCES tickets (id),
                number      TEXT NOT NULL,             -- whom we dial (proxy ticket: beneficiary)
                dialect     TEXT,                      -- remembered for that number at closing
                speed       REAL NOT NULL DEFAULT 1.0,
                state       TEXT NOT NULL CHECK (state IN ('pending', 'dialing', 'connected',
                                'no_answer', 'busy', 'done', 'cancelled')),
                attempts    INTEGER NOT NULL DEFAULT 0,
                next_at     REAL NOT NULL,
                lease_node  TEXT,                      -- the node dialling it
                outcome     TEXT CHECK (outcome IS NULL
                                OR outcome IN ('满意', '基本满意', '不满意', 'no_answer')),
                comment     TEXT,                      -- the citizen's words, transcribed
                last_error  TEXT,
                closed_at   REAL NOT NULL,             -- when the ticket was closed
                answered_at REAL,                      -- when the survey was answered
                created_at  REAL NOT NULL,
                updated_at  REAL NOT NULL
            )
            """,
            """
            CREATE UNIQUE INDEX followups_one_open_per_ticket ON followups (ticket_id)
            WHERE state IN ('pending', 'dialing', 'connected', 'no_answer', 'busy')
            """,
            "CREATE INDEX followups_due ON followups (state, next_at)",
            "CREATE INDEX followups_by_number ON followups (number, state)",
            "CREATE INDEX followups_by_closing ON followups (closed_at)",
            """
            CREATE TABLE followup_events (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                followup_id INTEGER NOT NULL REFERENCES followups (id),
                at          REAL NOT NULL,
                from_state  TEXT,
                to_state    TEXT NOT NULL,
                detail      TEXT NOT NULL
            )
            """,
            "CREATE INDEX followup_events_by_followup ON followup_events (followup_id, id)",
            "CREATE INDEX followup_events_dials ON followup_events (to_state, at)",
        ),
    ),
    Migration(
        14,
        "dispatch (派单) to departments by the duty list, graded supervision (督办), "
        "leader leases; console roles department and supervisor",
        (
            # one row per dispatched ticket: the department holding it now; each step
            # is also a ticket_history row (ivr/tickets/dispatch.py)
            """
            CREATE TABLE dispatches (
                ticket_id        INTEGER PRIMARY KEY NOT NULL REFERENCES tickets (id),
                department       TEXT NOT NULL,
                state            TEXT NOT NULL CHECK (state IN ('dispatched', 'accepted',
                                     'returned', 'replied')),
                category         TEXT NOT NULL DEFAULT '',
                urgency          TEXT NOT NULL DEFAULT '',
                started_at       REAL NOT NULL,        -- the first dispatch: the time runs
                due_at           REAL NOT NULL,        -- from it (with extensions granted)
                passes           INTEGER NOT NULL DEFAULT 0,  -- returned or reassigned
                level            INTEGER NOT NULL DEFAULT 0 CHECK (level BETWEEN 0 AND 3),
                passing_raised   INTEGER NOT NULL DEFAULT 0,  -- times 推诿 (level 2) raised
                extension_hours  REAL,                 -- asked for, not yet decided
                extension_reason TEXT,
                result           TEXT,                 -- the department's answer
                replied_at       REAL,
                dispatched_by    TEXT NOT NULL,
                updated_at       REAL NOT NULL
            )
            """,
            "CREATE INDEX dispatches_by_department ON dispatches (department, state)",
            "CREATE INDEX dispatches_due ON dispatches (state, due_at)",
            """
            CREATE TABLE supervision_raises (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                ticket_id  INTEGER NOT NULL REFERENCES tickets (id),
                department TEXT NOT NULL,
                level      INTEGER NOT NULL CHECK (level BETWEEN 1 AND 3),
                reason     TEXT NOT NULL,
                at         REAL NOT NULL
            )
            """,
            "CREATE INDEX supervision_raises_by_ticket ON supervision_raises (ticket_id, id)",
            "CREATE INDEX supervision_raises_by_time ON supervision_raises (at)",
            # one node of the cluster does a job at a time (ivr/leases.py)
            """
            CREATE TABLE leader_leases (
                name  TEXT PRIMARY KEY NOT NULL,
                node  TEXT NOT NULL,
                since REAL NOT NULL,
                until REAL NOT NULL
            )
            """,
        ),
        # users.role: the CHECK of migration 6 named operator and admin only; the
        # roles are checked by the program (ivr/web/auth.py ROLES, its one writer),
        # so a later role needs no table rebuilt.  SQLite cannot drop a CHECK: the
        # table is rebuilt, its sessions kept (dropping users cascades to them).
        sqlite_statements=(
            "CREATE TABLE sessions_kept AS SELECT * FROM sessions",
            """
            CREATE TABLE users_rebuilt (
                id            INTEGER PRIMARY KEY,
                name          TEXT NOT NULL UNIQUE,
                role          TEXT NOT NULL CHECK (role != ''),
                password_hash TEXT NOT NULL,
                sip_uri       TEXT,
                disabled      INTEGER NOT NULL DEFAULT 0,
                created_at    REAL NOT NULL,
                locked_at     REAL,
                locked_reason TEXT
            )
            """,
            "INSERT INTO users_rebuilt (id, name, role, password_hash, sip_uri, disabled, "
            "created_at, locked_at, locked_reason) SELECT id, name, role, password_hash, "
            "sip_uri, disabled, created_at, locked_at, locked_reason FROM users",
            "DROP TABLE users",
            "ALTER TABLE users_rebuilt RENAME TO users",
            "INSERT INTO sessions SELECT * FROM sessions_kept",
            "DROP TABLE sessions_kept",
        ),
        postgres_statements=(
            "ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check",
            "ALTER TABLE users ADD CONSTRAINT users_role_not_empty CHECK (role <> '')",
        ),
    ),
    Migration(
        15,
        "cases (案件): one matter, many reports; a ticket's case",
        (
            # a ticket saved joins the open case of its matter or opens its own
            # (ivr/tickets/cases.py); closing a case closes all its reports
            """
            CREATE TABLE cases (
                id             INTEGER PRIMARY KEY AUTOINCREMENT,
                status         TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
                city           TEXT NOT NULL DEFAULT '',
                category       TEXT NOT NULL DEFAULT '',
                district       TEXT NOT NULL DEFAULT '',
                place          TEXT NOT NULL DEFAULT '',   -- as the first report named it
                opened_at      REAL NOT NULL,
                last_report_at REAL NOT NULL,              -- the merge window runs from it
                closed_at      REAL,
                closed_by      TEXT
            )
            """,
            "CREATE INDEX cases_open ON cases (status, category, city, last_report_at)",
            "ALTER TABLE tickets ADD COLUMN case_id INTEGER REFERENCES cases (id)",
            "CREATE INDEX tickets_by_case ON tickets (case_id, created_at)",
        ),
    ),
    Migration(
        16,
        "enterprise registry (企业专席): business numbers routed to the enterprise seats",
        (
            # one row per registered number (ivr/enterprises.py); imported from a CSV
            """
            CREATE TABLE enterprise_numbers (
                number      TEXT PRIMARY KEY NOT NULL,
                name        TEXT NOT NULL,
                credit_code TEXT NOT NULL DEFAULT '',  -- 统一社会信用代码, if given
                added_at    REAL NOT NULL,
                source      TEXT NOT NULL DEFAULT ''   -- the file:line it came from
            )
            """,
        ),
    ),
    Migration(
        17,
        "cluster: console commands on calls carried out by the node holding the call; "
        "who is in each consultation, for every node's console",
        (
            """
            CREATE TABLE call_commands (
                id             INTEGER PRIMARY KEY AUTOINCREMENT,
                call_id        TEXT NOT NULL,
                node           TEXT NOT NULL,         -- the node holding the call: carries it out
                command        TEXT NOT NULL,         -- consult, drop, hangup
                args           TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(args)),
                requested_by   TEXT NOT NULL,         -- the console user
                requested_from TEXT NOT NULL,         -- the node whose console asked
                requested_at   REAL NOT NULL,
                state          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'running', 'done', 'failed', 'expired')),
                taken_at       REAL,
                finished_at    REAL,
                reason         TEXT NOT NULL DEFAULT '',  -- why it failed, for the screen
                result         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(result))
            )
            """,
            "CREATE INDEX call_commands_to_do ON call_commands (node, state)",
            "CREATE INDEX call_commands_by_time ON call_commands (requested_at)",
            """
            CREATE TABLE call_conversations (
                call_id    TEXT PRIMARY KEY NOT NULL,
                node       TEXT NOT NULL,
                operator   TEXT NOT NULL,
                state      TEXT NOT NULL CHECK (json_valid(state)),
                updated_at REAL NOT NULL
            )
            """,
        ),
    ),
    Migration(
        18,
        "quality inspection (双重质检): the day's conversations sampled at random, their "
        "automatic checks, and reviewers' scores",
        (
            # one row per local day sampled, written with its samples: a day is sampled once
            """
            CREATE TABLE quality_days (
                day        TEXT PRIMARY KEY NOT NULL,  -- YYYY-MM-DD, local time
                share      REAL NOT NULL,              -- [quality] share at the time
                candidates INTEGER NOT NULL,           -- conversations recorded that day
                picked     INTEGER NOT NULL,
                sampled_at REAL NOT NULL,
                node       TEXT NOT NULL               -- the node that sampled it
            )
            """,
            """
            CREATE TABLE quality_samples (
                id           INTEGER PRIMARY KEY AUTOINCREMENT,
                day          TEXT NOT NULL REFERENCES quality_days (day),
                recording_id INTEGER NOT NULL UNIQUE,  -- conversation_recordings.id
                call_id      TEXT NOT NULL,
                operator     TEXT NOT NULL,            -- never shown to reviewers
                seat_code    TEXT NOT NULL,            -- 坐席 A, B ... drawn anew each day
                sampled_at   REAL NOT NULL,
                check_state  TEXT NOT NULL DEFAULT 'pending'
                    CHECK (check_state IN ('pending', 'done', 'error')),
                checks       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(checks)),
                checked_at   REAL,
                checked_on   TEXT NOT NULL DEFAULT ''  -- the node that ran the checks
            )
            """,
            "CREATE INDEX quality_samples_by_day ON quality_samples (day)",
            "CREATE INDEX quality_samples_by_operator ON quality_samples (operator)",
            "CREATE INDEX quality_samples_to_check ON quality_samples (check_state)",
            """
            CREATE TABLE quality_reviews (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                sample_id   INTEGER NOT NULL REFERENCES quality_samples (id),
                reviewer    TEXT NOT NULL,             -- the console user
                score       INTEGER NOT NULL CHECK (score BETWEEN 0 AND 100),
                items       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(items)),
                comment     TEXT NOT NULL DEFAULT '',
                reviewed_at REAL NOT NULL,
                UNIQUE (sample_id, reviewer)
            )
            """,
        ),
    ),
    Migration(
        19,
        "tickets by the time they were taken: the situation map's counts and spike "
        "baselines read a period of tickets at every scrape and map refresh",
        ("CREATE INDEX tickets_by_created_at ON tickets (created_at)",),
    ),
    Migration(
        20,
        "spike episodes (未诉先办): when each district x category spike began and ended, "
        "its peak, and who acknowledged it",
        (
            """
            CREATE TABLE spike_episodes (
                id               INTEGER PRIMARY KEY AUTOINCREMENT,
                district         TEXT NOT NULL,
                category         TEXT NOT NULL,
                began_at         REAL NOT NULL,
                began_count      INTEGER NOT NULL,
                began_mean       REAL NOT NULL,   -- the baseline when it began
                began_sd         REAL NOT NULL,
                peak             INTEGER NOT NULL,
                peak_at          REAL NOT NULL,
                last_count       INTEGER NOT NULL,
                ended_at         REAL,            -- NULL while open
                acknowledged_by  TEXT,
                acknowledged_at  REAL,
                note             TEXT NOT NULL DEFAULT '',
                node             TEXT NOT NULL    -- the node whose pass opened it
            )
            """,
            # one open episode per pair, whatever node or restart opens it
            """
            CREATE UNIQUE INDEX spike_episodes_one_open ON spike_episodes (district, category)
            WHERE ended_at IS NULL
            """,
            "CREATE INDEX spike_episodes_by_began_at ON spike_episodes (began_at)",
        ),
    ),
    Migration(
        21,
        "duty list versions: every duty list (权责清单) published, followed by every node, "
        "for history and rollback",
        (
            """
            CREATE TABLE duty_list_versions (
                id           INTEGER PRIMARY KEY,
                version      TEXT NOT NULL,    -- first 12 hex digits of the text's sha256
                source       TEXT NOT NULL,    -- the TOML as published
                author       TEXT NOT NULL,
                note         TEXT NOT NULL DEFAULT '',
                published_at REAL NOT NULL
            )
            """,
        ),
    ),
    Migration(
        22,
        "quality inspection: calls written after their day was drawn get their chance "
        "(every recording considered by a draw, the later passes counted per day)",
        (
            # 1 once the day's considered recordings are kept in quality_considered
            # (days drawn before this migration: unknown, so no later pass for them)
            "ALTER TABLE quality_days ADD COLUMN late_tracked INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE quality_days ADD COLUMN late_passes INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE quality_days ADD COLUMN late_candidates INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE quality_days ADD COLUMN late_picked INTEGER NOT NULL DEFAULT 0",
            # 0: drawn with its day; 1, 2 ...: by the day's later pass of that number
            "ALTER TABLE quality_samples ADD COLUMN pass INTEGER NOT NULL DEFAULT 0",
            """
            CREATE TABLE quality_considered (
                recording_id  INTEGER PRIMARY KEY NOT NULL,  -- conversation_recordings.id
                day           TEXT NOT NULL REFERENCES quality_days (day),
                pass          INTEGER NOT NULL,              -- 0 the day's draw, then 1, 2 ...
                considered_at REAL NOT NULL
            )
            """,
            "CREATE INDEX quality_considered_by_day ON quality_considered (day)",
        ),
    ),
)


CREATE_SCHEMA_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version     INTEGER PRIMARY KEY NOT NULL,
        description TEXT NOT NULL,
        applied_at  REAL NOT NULL
    )
"""

_POSTGRES_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"\bid(\s+)INTEGER PRIMARY KEY(?: AUTOINCREMENT)?"),
        r"id\1BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    # SQLite's json_valid(x) check: PostgreSQL refuses text that does not cast
    (re.compile(r"CHECK \(json_valid\((\w+)\)\)"), r"CHECK ((\1::jsonb) IS NOT NULL)"),
)


def for_postgres(statement: str) -> str:
    """A migration statement (SQLite's dialect) in PostgreSQL's."""
    for pattern, replacement in _POSTGRES_REWRITES:
        statement = pattern.sub(replacement, statement)
    return statement


def check_migrations(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3 ... in order, got {versions}")

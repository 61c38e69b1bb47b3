"""Schema migrations: one step per schema change, per dialect, applied in order inside the schema transaction.

A new database gets the current tables from ``models`` at once and no steps. A database of an older version gets
every step after its version, in order, in the same transaction that reads and records the version (so two
processes starting at once cannot both migrate: SQLite's ``BEGIN IMMEDIATE`` writer and PostgreSQL's advisory
lock serialize them, and the second one finds the new version). A step is SQL text or a Core operation over the
connection; a step whose dialect is missing refuses to run rather than leave that database half-migrated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy.engine import Connection

from hybridflow.errors import HybridFlowError
from hybridflow.models import SCHEMA_VERSION

log = structlog.get_logger("hybridflow.migrations")
Operation = str | Callable[[Connection], None]


class MigrationMissing(HybridFlowError):
    exit_code = 2
    code = "migration_missing"


@dataclass(frozen=True, slots=True)
class Migration:
    """What brings a database of version ``version - 1`` to ``version``."""

    version: int
    description: str
    steps: dict[str, Sequence[Operation]] = field(default_factory=dict)  # dialect name -> operations in order

    def apply(self, conn: Connection) -> None:
        dialect = conn.dialect.name
        if dialect not in self.steps:
            raise MigrationMissing(f"schema version {self.version} has no migration for {dialect}")
        for operation in self.steps[dialect]:
            if isinstance(operation, str):
                conn.exec_driver_sql(operation)
            else:
                operation(conn)


# Steps are frozen SQL, never today's ``models``: a later change to the tables must not change an old step.
_V1_COLUMNS = ("id, tenant_id, session_id, chat_id, trigger_message_id, last_message_id, status, due_at, attempts, "
               "lease_until, claimed_by, reply_text, sent_message_id, last_error, received_at, created_at, updated_at, "
               "attempted_at, sent_at")

# SQLite cannot change a table's constraints in place: build the new table and copy the rows (the documented
# "12 steps" of ALTER TABLE, in the caller's transaction; no other table refers to reply_jobs).
_SQLITE_V2 = [
    "DROP INDEX uq_reply_jobs_one_queued_per_session",
    "DROP INDEX ix_reply_jobs_status_due",
    "DROP INDEX ix_reply_jobs_sent_message",
    "DROP INDEX ix_reply_jobs_session_created",
    "ALTER TABLE reply_jobs RENAME TO reply_jobs_v1",
    """CREATE TABLE reply_jobs (
        id INTEGER NOT NULL, tenant_id INTEGER NOT NULL, session_id INTEGER NOT NULL, chat_id VARCHAR NOT NULL,
        kind VARCHAR(20) NOT NULL, trigger_message_id VARCHAR NOT NULL, last_message_id VARCHAR,
        status VARCHAR(20) NOT NULL, due_at DATETIME NOT NULL, attempts INTEGER NOT NULL, lease_until DATETIME,
        claimed_by VARCHAR, reply_text TEXT, sent_message_id VARCHAR, last_error TEXT, received_at DATETIME NOT NULL,
        created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, attempted_at DATETIME, sent_at DATETIME,
        PRIMARY KEY (id),
        CONSTRAINT uq_reply_jobs_kind_trigger UNIQUE (tenant_id, kind, trigger_message_id),
        FOREIGN KEY(tenant_id) REFERENCES tenants (id),
        FOREIGN KEY(session_id) REFERENCES sessions (id))""",
    f"INSERT INTO reply_jobs ({_V1_COLUMNS}, kind) SELECT {_V1_COLUMNS}, 'reply' FROM reply_jobs_v1",
    "DROP TABLE reply_jobs_v1",
    "CREATE INDEX ix_reply_jobs_sent_message ON reply_jobs (tenant_id, sent_message_id)",
    "CREATE INDEX ix_reply_jobs_session_created ON reply_jobs (session_id, created_at)",
    "CREATE INDEX ix_reply_jobs_status_due ON reply_jobs (status, due_at)",
    "CREATE UNIQUE INDEX uq_reply_jobs_one_queued_reply ON reply_jobs (session_id) "
    "WHERE status = 'queued' AND kind = 'reply'",
]


def _contacts_table(id_type: str, timestamp: str) -> str:
    return f"""CREATE TABLE tenant_contacts (
        id {id_type} NOT NULL, tenant_id INTEGER NOT NULL, rule VARCHAR(10) NOT NULL, chat_id VARCHAR NOT NULL,
        label VARCHAR NOT NULL, created_at {timestamp} NOT NULL, PRIMARY KEY (id),
        CONSTRAINT uq_tenant_contacts_rule_chat UNIQUE (tenant_id, rule, chat_id),
        FOREIGN KEY(tenant_id) REFERENCES tenants (id))"""


def _v4(timestamp: str) -> list[str]:
    return ["ALTER TABLE tenants ADD COLUMN away_message TEXT",
            "ALTER TABLE tenants ADD COLUMN locale VARCHAR(20)",
            "ALTER TABLE tenants ADD COLUMN country VARCHAR(2)",
            "ALTER TABLE tenants ADD COLUMN daily_tokens INTEGER",
            "ALTER TABLE reply_jobs ADD COLUMN tokens INTEGER",
            f"ALTER TABLE reply_jobs ADD COLUMN generated_at {timestamp}",
            "CREATE INDEX ix_reply_jobs_tenant_generated ON reply_jobs (tenant_id, generated_at)"]


_V4_MESSAGE_COLUMNS = ("id, tenant_id, session_id, message_id, chat_id, event, direction, from_me, kind, message_type, "
                       "text, push_name, wa_timestamp, received_at, action, raw")


def _v5_indexes_and_tombstones(timestamp: str) -> list[str]:
    return ["CREATE INDEX ix_messages_tenant_received ON messages (tenant_id, received_at)",
            "CREATE INDEX ix_reply_jobs_tenant_created ON reply_jobs (tenant_id, created_at)",
            "CREATE INDEX ix_session_events_tenant_at ON session_events (tenant_id, at)",
            "CREATE INDEX ix_messages_raw_received ON messages (tenant_id, received_at) WHERE raw IS NOT NULL",
            f"""CREATE TABLE message_tombstones (
                tenant_id INTEGER NOT NULL, message_id VARCHAR NOT NULL, deleted_at {timestamp} NOT NULL,
                PRIMARY KEY (tenant_id, message_id))""",
            "CREATE INDEX ix_message_tombstones_deleted ON message_tombstones (deleted_at)",
            "ALTER TABLE tenants ADD COLUMN retain_raw FLOAT",
            "ALTER TABLE tenants ADD COLUMN retain_messages FLOAT"]


# SQLite cannot drop a column's NOT NULL in place: the messages table is rebuilt as version 2 rebuilt reply_jobs
# (no other table refers to messages), with the same constraint and index names a new database gets.
_SQLITE_V5 = [
    "DROP INDEX ix_messages_session_received",
    "ALTER TABLE messages RENAME TO messages_v4",
    """CREATE TABLE messages (
        id INTEGER NOT NULL, tenant_id INTEGER NOT NULL, session_id INTEGER NOT NULL, message_id VARCHAR NOT NULL,
        chat_id VARCHAR NOT NULL, event VARCHAR(60) NOT NULL, direction VARCHAR(20) NOT NULL, from_me BOOLEAN NOT NULL,
        kind VARCHAR(20) NOT NULL, message_type VARCHAR, text TEXT, push_name VARCHAR, wa_timestamp DATETIME,
        received_at DATETIME NOT NULL, action VARCHAR(30) NOT NULL, raw TEXT,
        PRIMARY KEY (id),
        CONSTRAINT uq_messages_tenant_message UNIQUE (tenant_id, message_id),
        FOREIGN KEY(tenant_id) REFERENCES tenants (id),
        FOREIGN KEY(session_id) REFERENCES sessions (id))""",
    f"INSERT INTO messages ({_V4_MESSAGE_COLUMNS}) SELECT {_V4_MESSAGE_COLUMNS} FROM messages_v4",
    "DROP TABLE messages_v4",
    "CREATE INDEX ix_messages_session_received ON messages (session_id, received_at)",
    *_v5_indexes_and_tombstones("DATETIME"),
]


def _v6(timestamp: str) -> list[str]:
    tenant_fk = "FOREIGN KEY(tenant_id) REFERENCES tenants (id)"
    return [
        "ALTER TABLE sessions ADD COLUMN pauses TEXT",
        f"ALTER TABLE tenants ADD COLUMN paused_at {timestamp}",
        f"ALTER TABLE tenants ADD COLUMN paused_until {timestamp}",
        "ALTER TABLE tenants ADD COLUMN paused_by VARCHAR",
        "ALTER TABLE tenants ADD COLUMN pause_label VARCHAR",
        "ALTER TABLE tenants ADD COLUMN owner_jid VARCHAR",
        "ALTER TABLE tenants ADD COLUMN owner_source VARCHAR(10)",
        "ALTER TABLE tenants ADD COLUMN command_word VARCHAR(30)",
        "ALTER TABLE tenants ADD COLUMN handoff_phrases TEXT",
        "ALTER TABLE tenants ADD COLUMN handoff_pause FLOAT",
        "ALTER TABLE tenants ADD COLUMN handoff_message TEXT",
        "ALTER TABLE tenants ADD COLUMN notify_number VARCHAR",
        f"""CREATE TABLE tenant_labels (
            tenant_id INTEGER NOT NULL, label_id VARCHAR NOT NULL, name VARCHAR NOT NULL, deleted BOOLEAN NOT NULL,
            updated_at {timestamp} NOT NULL, PRIMARY KEY (tenant_id, label_id), {tenant_fk})""",
        f"""CREATE TABLE chat_labels (
            tenant_id INTEGER NOT NULL, chat_id VARCHAR NOT NULL, label_id VARCHAR NOT NULL,
            added_at {timestamp} NOT NULL, PRIMARY KEY (tenant_id, chat_id, label_id), {tenant_fk})""",
        f"""CREATE TABLE chat_aliases (
            tenant_id INTEGER NOT NULL, lid VARCHAR NOT NULL, chat_id VARCHAR NOT NULL,
            PRIMARY KEY (tenant_id, lid), {tenant_fk})""",
    ]


_V7 = [
    "ALTER TABLE tenants ADD COLUMN handoff_tool BOOLEAN",
    "ALTER TABLE tenants ADD COLUMN notify_url TEXT",
    "ALTER TABLE tenants ADD COLUMN notify_secret_enc TEXT",
    "ALTER TABLE tenants ADD COLUMN split_replies BOOLEAN",
    "ALTER TABLE tenants ADD COLUMN time_per_char INTEGER",
    "ALTER TABLE tenants ADD COLUMN max_reply_delay FLOAT",
    "ALTER TABLE reply_jobs ADD COLUMN parts TEXT",
    "ALTER TABLE reply_jobs ADD COLUMN parts_sent INTEGER",
]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "reply jobs get a kind; uniqueness per kind", {
        "sqlite": _SQLITE_V2,
        "postgresql": [
            "ALTER TABLE reply_jobs ADD COLUMN kind VARCHAR(20) NOT NULL DEFAULT 'reply'",
            "ALTER TABLE reply_jobs ALTER COLUMN kind DROP DEFAULT",
            "ALTER TABLE reply_jobs DROP CONSTRAINT uq_reply_jobs_trigger",
            "ALTER TABLE reply_jobs ADD CONSTRAINT uq_reply_jobs_kind_trigger UNIQUE (tenant_id, kind, trigger_message_id)",
            "DROP INDEX uq_reply_jobs_one_queued_per_session",
            "CREATE UNIQUE INDEX uq_reply_jobs_one_queued_reply ON reply_jobs (session_id) "
            "WHERE status = 'queued' AND kind = 'reply'",
        ],
    }),
    Migration(3, "tenants' ignore and allow lists; the per-chat reply cap; the longest reply; business hours", {
        "sqlite": [_contacts_table("INTEGER", "DATETIME"),
                   "ALTER TABLE tenants ADD COLUMN reply_cap_count INTEGER",
                   "ALTER TABLE tenants ADD COLUMN reply_cap_window FLOAT",
                   "ALTER TABLE tenants ADD COLUMN max_reply_chars INTEGER",
                   "ALTER TABLE tenants ADD COLUMN hours TEXT",
                   "ALTER TABLE tenants ADD COLUMN hours_mode VARCHAR(10) NOT NULL DEFAULT 'always'"],
        "postgresql": [_contacts_table("SERIAL", "TIMESTAMP WITH TIME ZONE"),
                       "ALTER TABLE tenants ADD COLUMN reply_cap_count INTEGER",
                       "ALTER TABLE tenants ADD COLUMN reply_cap_window FLOAT",
                       "ALTER TABLE tenants ADD COLUMN max_reply_chars INTEGER",
                       "ALTER TABLE tenants ADD COLUMN hours TEXT",
                       "ALTER TABLE tenants ADD COLUMN hours_mode VARCHAR(10) NOT NULL DEFAULT 'always'"],
    }),
    Migration(4, "away messages, locale and country per tenant; the daily token budget and each text's tokens", {
        "sqlite": _v4("DATETIME"),
        "postgresql": _v4("TIMESTAMP WITH TIME ZONE"),
    }),
    Migration(5, "retention: raw payloads may be cleared, tombstones of deleted message ids, per-tenant retention", {
        "sqlite": _SQLITE_V5,
        "postgresql": ["ALTER TABLE messages ALTER COLUMN raw DROP NOT NULL",
                       *_v5_indexes_and_tombstones("TIMESTAMP WITH TIME ZONE")],
    }),
    Migration(6, "pauses that stack, the tenant-wide pause, labels on the phone, the owner's number and commands, "
                 "the handoff to a person and notifications", {
        "sqlite": _v6("DATETIME"),
        "postgresql": _v6("TIMESTAMP WITH TIME ZONE"),
    }),
    Migration(7, "the handoff tool, notifications to a URL, replies paced in parts, the longest delay of a reply", {
        "sqlite": _V7,
        "postgresql": _V7,
    }),
)


def latest(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The version a database has once every step of ``migrations`` is applied."""
    return max([SCHEMA_VERSION, *(m.version for m in migrations)])


def migrate(conn: Connection, current: int, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply every step after ``current`` in order; returns the new version. The caller records it."""
    target = latest(migrations)
    by_version = {m.version: m for m in migrations}
    for version in range(current + 1, target + 1):
        step = by_version.get(version)
        if step is None:
            raise MigrationMissing(f"no migration from schema version {version - 1} to {version}")
        step.apply(conn)
        log.info("schema.migrated", from_version=version - 1, to_version=version, change=step.description)
    return target


__all__ = ["Migration", "MIGRATIONS", "MigrationMissing", "latest", "migrate"]

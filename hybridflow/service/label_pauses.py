"""The owner's labels on the phone: a WhatsApp Business label named by the tenant's ``--pause-label`` pauses a
chat while it is on it (pause reason ``label``, no timer), and taking it off lifts that pause only.

``apply`` is the batching writer's work for one ``labels.edit`` or ``labels.association`` webhook (synchronous Core
code in the batch's transaction). Labels are stored as they arrive, because only ``labels.edit`` carries a name:
an association whose label is not known yet is kept, and naming that label the pause label later (or renaming a
label to it on the phone) pauses the chats that carry it. A chat named by its ``@lid`` is found through the aliases
learned from messages that carried both ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from hybridflow import labels, pauses
from hybridflow.models import ALIASES, CHAT_LABELS, LABELS, SESSIONS
from hybridflow.service.ingest import Action, IngestResult, SessionState, write_sessions
from hybridflow.service.sessions import kind_of
from hybridflow.service.tenants import TenantConfig
from hybridflow.statements import alias_of, chats_naming_lid, insert_for, lock_sessions

LABEL_PAUSED, LABEL_RESUMED, LABEL_STORED = Action.LABEL_PAUSED, Action.LABEL_RESUMED, Action.LABEL_STORED
ACTOR = "label"
log = structlog.get_logger("hybridflow.labels")


def apply(conn: Connection, tenant: TenantConfig, change: labels.LabelEdit | labels.LabelAssociation,
          now: datetime) -> IngestResult:
    """Store a label change and pause or lift the chats it concerns."""
    if isinstance(change, labels.LabelEdit):
        return _edit(conn, tenant, change, now)
    return _association(conn, tenant, change, now)


def _edit(conn: Connection, tenant: TenantConfig, change: labels.LabelEdit, now: datetime) -> IngestResult:
    old = conn.execute(sa.select(LABELS.c.name, LABELS.c.deleted).where(
        LABELS.c.tenant_id == tenant.id, LABELS.c.label_id == change.label_id)).first()
    was = old is not None and not old.deleted and labels.same_name(old.name, tenant.pause_label)
    now_pausing = not change.deleted and labels.same_name(change.name, tenant.pause_label)
    upsert = insert_for(conn, LABELS).values(tenant_id=tenant.id, label_id=change.label_id, name=change.name,
                                             deleted=change.deleted, updated_at=now)
    conn.execute(upsert.on_conflict_do_update(index_elements=["tenant_id", "label_id"], set_={
        "name": upsert.excluded.name, "deleted": upsert.excluded.deleted, "updated_at": now}))
    reason = "deleted" if change.deleted else "renamed" if old is not None and old.name != change.name else "known"
    if was == now_pausing:
        return IngestResult(LABEL_STORED, tenant.instance, reason=reason)
    chats = list(conn.execute(sa.select(CHAT_LABELS.c.chat_id).where(
        CHAT_LABELS.c.tenant_id == tenant.id, CHAT_LABELS.c.label_id == change.label_id)).scalars())
    if change.deleted:
        conn.execute(sa.delete(CHAT_LABELS).where(CHAT_LABELS.c.tenant_id == tenant.id,
                                                  CHAT_LABELS.c.label_id == change.label_id))
    states = _sessions(conn, tenant, chats, now)
    if not states:
        return IngestResult(LABEL_STORED, tenant.instance, reason=reason)
    for state in states:
        if now_pausing:
            state.pause(pauses.LABEL, ACTOR, now, None, None, key=change.label_id)
        else:
            state.lift(pauses.LABEL, ACTOR, now, key=change.label_id)
    write_sessions(conn, states, now)
    action = LABEL_PAUSED if now_pausing else LABEL_RESUMED
    # The reason is one of a few words (it labels a metric); how many chats changed goes to the log.
    log.info("label.applied", tenant=tenant.instance, label_id=change.label_id, action=action, chats=len(states))
    return IngestResult(action, tenant.instance, reason=reason)


def _association(conn: Connection, tenant: TenantConfig, change: labels.LabelAssociation,
                 now: datetime) -> IngestResult:
    chat_id = _chat_of(conn, tenant.id, change.chat_id)
    where = sa.and_(CHAT_LABELS.c.tenant_id == tenant.id, CHAT_LABELS.c.chat_id == chat_id,
                    CHAT_LABELS.c.label_id == change.label_id)
    if change.added:
        conn.execute(insert_for(conn, CHAT_LABELS).values(
            tenant_id=tenant.id, chat_id=chat_id, label_id=change.label_id, added_at=now).on_conflict_do_nothing(
            index_elements=["tenant_id", "chat_id", "label_id"]))
    else:
        conn.execute(sa.delete(CHAT_LABELS).where(where))
    label = conn.execute(sa.select(LABELS.c.name, LABELS.c.deleted).where(
        LABELS.c.tenant_id == tenant.id, LABELS.c.label_id == change.label_id)).first()
    if label is None:
        return IngestResult(LABEL_STORED, tenant.instance, chat_id, reason="unknown_label")
    if label.deleted or not labels.same_name(label.name, tenant.pause_label):
        return IngestResult(LABEL_STORED, tenant.instance, chat_id, reason="other_label")
    [state] = _sessions(conn, tenant, [chat_id], now)
    if change.added:
        state.pause(pauses.LABEL, ACTOR, now, None, None, key=change.label_id)
    else:
        state.lift(pauses.LABEL, ACTOR, now, key=change.label_id)
    write_sessions(conn, [state], now)
    return IngestResult(LABEL_PAUSED if change.added else LABEL_RESUMED, tenant.instance, chat_id,
                        reason=pauses.LABEL, paused=state.is_paused, resumes_at=state.resumes_at)


def _chat_of(conn: Connection, tenant_id: int, chat_id: str) -> str:
    """The chat a label event names: a ``@lid`` becomes the phone-keyed chat it is known as, if any."""
    if not chat_id.endswith("@lid"):
        return chat_id
    alias = alias_of(conn, tenant_id, chat_id)
    if alias is not None:
        return alias
    if conn.execute(sa.select(SESSIONS.c.id).where(SESSIONS.c.tenant_id == tenant_id,
                                                   SESSIONS.c.chat_id == chat_id)).first() is not None:
        return chat_id  # a chat known by its LID only
    for named in chats_naming_lid(conn, tenant_id, chat_id)[:1]:  # a message from before aliases were kept
        conn.execute(insert_for(conn, ALIASES).values(tenant_id=tenant_id, lid=chat_id, chat_id=named)
                     .on_conflict_do_nothing(index_elements=["tenant_id", "lid"]))
        return named
    return chat_id


def _sessions(conn: Connection, tenant: TenantConfig, chat_ids: list[str], now: datetime) -> list[SessionState]:
    """The chats' sessions, created if needed and locked for this transaction."""
    keys = {(tenant.id, chat_id): kind_of(chat_id) for chat_id in chat_ids}
    return [SessionState.from_row(row) for row in lock_sessions(conn, keys, now).values()] if keys else []


def resync(conn: Connection, tenant: TenantConfig, now: datetime) -> int:
    """After the tenant's pause label changed: pause the chats that carry the label it names now, lift the label
    pauses of the ones that do not. Returns how many chats changed."""
    rows = conn.execute(sa.select(LABELS.c.label_id, LABELS.c.name).where(
        LABELS.c.tenant_id == tenant.id, LABELS.c.deleted.is_(False))).all()
    pausing = {r.label_id for r in rows if labels.same_name(r.name, tenant.pause_label)}
    carrying = set(conn.execute(sa.select(CHAT_LABELS.c.chat_id).where(
        CHAT_LABELS.c.tenant_id == tenant.id, CHAT_LABELS.c.label_id.in_(pausing))).scalars()) if pausing else set()
    labelled = set(conn.execute(sa.select(SESSIONS.c.chat_id).where(
        SESSIONS.c.tenant_id == tenant.id, SESSIONS.c.is_paused.is_(True),
        SESSIONS.c.pauses.contains(f'"reason":"{pauses.LABEL}"'))).scalars())
    states = _sessions(conn, tenant, sorted(carrying | labelled), now)
    for state in states:
        held = {p.key for p in pauses.holding(state.held, now) if p.reason == pauses.LABEL}
        for key in held - pausing:
            state.lift(pauses.LABEL, ACTOR, now, key=key)
        if state.chat_id in carrying and not held & pausing:
            ids = sorted(set(conn.execute(sa.select(CHAT_LABELS.c.label_id).where(
                CHAT_LABELS.c.tenant_id == tenant.id, CHAT_LABELS.c.chat_id == state.chat_id)).scalars()) & pausing)
            state.pause(pauses.LABEL, ACTOR, now, None, None, key=ids[0])
    changed = [s for s in states if s.changes]
    write_sessions(conn, changed, now)
    return len(changed)


def known(conn: Connection, tenant_id: int) -> list[Any]:
    """A tenant's labels as last reported, with how many chats carry each."""
    carried = (sa.select(CHAT_LABELS.c.label_id, sa.func.count().label("chats"))
               .where(CHAT_LABELS.c.tenant_id == tenant_id).group_by(CHAT_LABELS.c.label_id).subquery())
    return conn.execute(
        sa.select(LABELS.c.label_id, LABELS.c.name, LABELS.c.deleted, LABELS.c.updated_at,
                  sa.func.coalesce(carried.c.chats, 0).label("chats"))
        .outerjoin(carried, carried.c.label_id == LABELS.c.label_id)
        .where(LABELS.c.tenant_id == tenant_id).order_by(LABELS.c.name)).all()


__all__ = ["LABEL_PAUSED", "LABEL_RESUMED", "LABEL_STORED", "apply", "known", "resync"]

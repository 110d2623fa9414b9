"""Messages: append (a batch, atomically), read, list, delete, truncate
(sql/messages.sql); and the rules of a batch, its SQL parameters, and what
a refused append means (the pure half of an append).

Long because: an append on a branch (parent_seq) needs its own transaction
and refusal, and splitting the write path from its pure half would leave
each module reading the other."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import TypeAdapter

from chatstore import idempotency
from chatstore.config import Settings
from chatstore.database import Database
from chatstore.errors import NotFound, SeqConflict, ValidationError
from chatstore.ids import NO_AFTER, NO_BEFORE, ConversationId, conversation_uuid, seq_param
from chatstore.models import (
    MAX_BATCH,
    Message,
    MessageInput,
    MessagePage,
    Row,
    json_body,
    message_json,
)
from chatstore.pool import dumps
from chatstore.validation import check_content_cap, check_limit, validate_model

MAX_PAGE = 1000

MessageLike = MessageInput | Mapping[str, Any]
Order = Literal["asc", "desc"]

_MESSAGES = TypeAdapter(list[Message])


async def append(
    db: Database,
    user_id: str,
    conversation_id: ConversationId,
    messages: Sequence[MessageLike],
    *,
    expected_last_seq: int | None = None,
    parent_seq: int | None = None,
    idempotency_key: str | None = None,
) -> list[Message]:
    """Append atomically: consecutive seqs in the given order, or nothing.

    The first message follows ``parent_seq`` (a message on the active path;
    0: a new first message; None: the active leaf), each next one the one
    before it, and the last becomes the active leaf."""
    conversation = conversation_uuid(conversation_id)
    batch = validate_batch(messages, db.settings)
    if expected_last_seq is not None and expected_last_seq < 0:
        raise ValidationError.at(["expected_last_seq"], "must be 0 or more")
    if parent_seq is not None and not 0 <= parent_seq <= NO_BEFORE:
        raise ValidationError.at(["parent_seq"], "must be a seq, or 0 for a new first message")

    async def append() -> list[Message]:
        return await _append(db, user_id, conversation, batch, expected_last_seq, parent_seq)

    if idempotency_key is None:
        return await append()
    # parent_seq joins the fingerprint only when given, so that a plain
    # append's fingerprint is what it was before branches.
    branch = () if parent_seq is None else (parent_seq,)
    request = idempotency.fingerprint(
        "append_messages",
        str(conversation),
        [m.model_dump(exclude_unset=True) for m in batch],
        expected_last_seq,
        *branch,
    )
    stored, _ = await idempotency.run_once(
        db,
        user_id,
        idempotency_key,
        request,
        append,
        _MESSAGES,
        holds_of=lambda stored: idempotency.Holds.messages(conversation, [m.seq for m in stored]),
        conversation_id=conversation,
    )
    return stored


async def _append(
    db: Database,
    user_id: str,
    conversation: uuid.UUID,
    batch: list[MessageInput],
    expected_last_seq: int | None,
    parent_seq: int | None,
) -> list[Message]:
    rows = await append_rows(
        db, user_id, conversation, batch, batch_params(batch), expected_last_seq, parent_seq
    )
    return Message.from_rows(rows)


async def append_rows(
    db: Database,
    user_id: str,
    conversation: uuid.UUID,
    batch: Sequence[MessageInput | None],
    params: dict[str, list[Any]],
    expected_last_seq: int | None,
    parent_seq: int | None,
    *,
    loc: tuple[str, str] = ("messages", "tool_call_id"),
) -> Sequence[Row]:
    """Run append_messages with ``params`` (one element per row) and return
    its rows, or raise why it stored nothing. ``batch``: each row's
    chat-completions message (None for an item without that form,
    chatstore/items.py), which the refusal is worked out from; ``loc``
    names the list and the field a refused tool answer is reported at."""
    if parent_seq is None and not any(m is not None and m.role == "tool" for m in batch):
        # A plain append reads no path: one statement that locks inside
        # itself, gathered with others' while this process's append
        # statements are busy (chatstore/appends.py); in the caller's
        # transaction, that transaction's.
        if db.in_transaction:
            rows = await _append_statement(
                db, user_id, conversation, expected_last_seq, None, params
            )
        else:
            rows = await db.appends.append(user_id, conversation, expected_last_seq, params)
            if rows:
                # Run outside this task's queries: its commit LSN is
                # recorded here, for this caller's reads (replicas).
                await db.wrote()
        if rows:
            await _announce_if_followed(db, conversation, rows)
            return rows
        # Nothing written: the conversation is not the caller's, or
        # expected_last_seq is not its leaf, or another writer holds its
        # row (the statement skips a locked row rather than wait with a
        # connection that others' appends may need). Judged below, after
        # the lock.
    # A branching append moves the active path, and a tool message's call
    # must be on the path it joins: both are judged under the row lock,
    # before the append (sql/messages.sql, append_messages), so that no
    # path change (switch, regenerate, another append) commits in between.
    # A plain append that found the row held waits for it here.
    async with db.transaction(writes=(user_id, conversation)):
        if not await lock(db, user_id, conversation):
            raise NotFound("conversation")
        refused = await _refusal(
            db, user_id, conversation, batch, expected_last_seq, parent_seq, loc
        )
        if refused is not None:
            raise refused
        rows = await _append_statement(
            db, user_id, conversation, expected_last_seq, parent_seq, params
        )
        if not rows:  # pragma: no cover - judged under the lock just now
            raise SeqConflict(expected_last_seq or 0, -1)
        if parent_seq is not None:
            # The path after the new parent leaves it (a statement of its
            # own: sql/messages.sql, append_messages).
            await db.execrows(
                "leave_active_path",
                user_id=user_id,
                conversation_id=conversation,
                parent_seq=parent_seq,
                first_new_seq=rows[0]["seq"],
            )
        await _announce_if_followed(db, conversation, rows)
        return rows


async def _refusal(
    db: Database,
    user_id: str,
    conversation: uuid.UUID,
    batch: Sequence[MessageInput | None],
    expected_last_seq: int | None,
    parent_seq: int | None,
    loc: tuple[str, str],
) -> Exception | None:
    """Why an append of ``batch`` is refused, from diagnose_append; None:
    nothing refuses it."""
    diagnosis = await db.one(
        "diagnose_append",
        user_id=user_id,
        conversation_id=conversation,
        parent_seq=parent_seq,
        tool_call_ids=answered_call_ids(batch),
    )
    return refusal(diagnosis, batch, expected_last_seq, parent_seq, loc=loc)


async def _announce_if_followed(db: Database, conversation: uuid.UUID, rows: Sequence[Row]) -> None:
    # Announced only while some process follows the conversation (its
    # lease, read under the row lock: chatstore/leases.py).
    if rows[-1]["followed"]:
        await announce(db, conversation, rows[-1]["seq"])


async def announce(db: Database, conversation: uuid.UUID, seq: int) -> None:
    """Tell every process's followers that ``conversation`` grew to
    ``seq``, once the append has committed (announce_messages in
    sql/messages.sql says why not inside it): the append does not wait for
    it, and announcements that commit together go out together
    (chatstore/announcer.py). Late or lost, followers still read the
    message from the table (chatstore/events.py)."""

    async def committed() -> None:
        db.announcer.add(conversation, seq)

    await db.after_commit(("announce_messages", conversation), committed)


async def _append_statement(
    db: Database,
    user_id: str,
    conversation: uuid.UUID,
    expected_last_seq: int | None,
    parent_seq: int | None,
    params: dict[str, list[Any]],
) -> Sequence[Row]:
    return await db.many(
        "append_messages",
        user_id=user_id,
        conversation_id=conversation,
        expected_last_seq=expected_last_seq,
        parent_seq=parent_seq,
        search_config=db.settings.search_config,
        **params,
    )


async def get(db: Database, user_id: str, conversation_id: ConversationId, seq: int) -> Message:
    row = await db.one(
        "get_message",
        user_id=user_id,
        conversation_id=conversation_uuid(conversation_id, "message"),
        seq=seq_param(seq),
    )
    if row is None:
        raise NotFound("message")
    return Message.from_row(row)


async def _page_rows(
    db: Database,
    user_id: str,
    conversation_id: ConversationId,
    limit: int,
    order: Order,
    after: int | None,
    before: int | None,
) -> tuple[Sequence[Row], bool]:
    """A page's message rows, and whether more follow."""
    check_limit(limit, MAX_PAGE)
    if order not in ("asc", "desc"):
        raise ValidationError.at(["query", "order"], "order must be 'asc' or 'desc'")
    for name, bound in (("after", after), ("before", before)):
        if bound is not None and not 0 <= bound <= NO_BEFORE:
            raise ValidationError.at(["query", name], f"{name} must be a seq (0 or more)")
    rows = await db.many(
        f"list_messages_{order}",
        user_id=user_id,
        conversation_id=conversation_uuid(conversation_id),
        after=NO_AFTER if after is None else after,
        before=NO_BEFORE if before is None else before,
        limit=limit + 1,
    )
    if not rows:
        raise NotFound("conversation")
    if rows[0]["seq"] is None:
        # The conversation's one row, with no message (LEFT JOIN LATERAL):
        # only an empty page has it.
        return [], False
    return rows[:limit], len(rows) > limit


async def page(
    db: Database,
    user_id: str,
    conversation_id: ConversationId,
    *,
    limit: int = 100,
    order: Order = "asc",
    after: int | None = None,
    before: int | None = None,
) -> MessagePage:
    rows, has_more = await _page_rows(db, user_id, conversation_id, limit, order, after, before)
    return MessagePage.of(Message.from_rows(rows), has_more)


async def page_json(
    db: Database,
    user_id: str,
    conversation_id: ConversationId,
    *,
    limit: int = 100,
    order: Order = "asc",
    after: int | None = None,
    before: int | None = None,
) -> bytes:
    """page(), as the JSON of its MessagePage, written from the rows
    (models.message_json: no model built)."""
    rows, has_more = await _page_rows(db, user_id, conversation_id, limit, order, after, before)
    return json_body(
        {
            "data": [message_json(row) for row in rows],
            "has_more": has_more,
            "first_seq": rows[0]["seq"] if rows else None,
            "last_seq": rows[-1]["seq"] if rows else None,
        }
    )


async def delete(db: Database, user_id: str, conversation_id: ConversationId, seq: int) -> None:
    conversation = conversation_uuid(conversation_id, "message")
    async with db.transaction(writes=(user_id, conversation)):
        if not await lock(db, user_id, conversation):
            raise NotFound("message")
        deleted = await db.execrows(
            "delete_message",
            user_id=user_id,
            conversation_id=conversation,
            seq=seq_param(seq),
            any_row=False,
        )
        if deleted:
            await _forget_responses(db, user_id, conversation, seq, seq)
    if deleted == 0:
        raise NotFound("message")


async def truncate(
    db: Database, user_id: str, conversation_id: ConversationId, from_seq: int
) -> int:
    """Delete the active path from its first message with ``seq >= from_seq``
    and everything below it; return how many went."""
    if from_seq < 1:
        raise ValidationError.at(["query", "from_seq"], "from_seq must be 1 or more")
    conversation = conversation_uuid(conversation_id)
    async with db.transaction(writes=(user_id, conversation)):
        if not await lock(db, user_id, conversation):
            raise NotFound("conversation")
        deleted: int = await db.scalar(
            "truncate_messages",
            user_id=user_id,
            conversation_id=conversation,
            from_seq=min(from_seq, NO_BEFORE),
        )
        if deleted:
            await _forget_responses(db, user_id, conversation, from_seq, NO_BEFORE)
    return deleted


async def _forget_responses(
    db: Database, user_id: str, conversation: uuid.UUID, first_seq: int, last_seq: int
) -> None:
    """In a message delete's transaction: the idempotency keys whose
    stored responses hold any of the deleted messages go too, so no copy
    of them is left to replay. (A conversation's delete takes its keys
    by ON DELETE CASCADE, a user's delete takes the user's.)"""
    await db.exec(
        "delete_idempotency_keys_holding_messages",
        user_id=user_id,
        conversation_id=conversation,
        first_seq=first_seq,
        last_seq=last_seq,
    )


async def lock(db: Database, user_id: str, conversation: uuid.UUID) -> bool:
    """Take the conversation's row lock, as every writer does first (in
    the caller's transaction): before an idempotency key's row, so that no
    two writers wait on each other in a cycle. False: not the caller's."""
    found = await db.scalar("lock_conversation", user_id=user_id, conversation_id=conversation)
    return found is not None


# -- a batch: the pure half ------------------------------------------------


def validate_batch(messages: Sequence[MessageLike], settings: Settings) -> list[MessageInput]:
    """1 to MAX_BATCH valid messages whose tool call ids are all distinct."""
    if not 1 <= len(messages) <= MAX_BATCH:
        raise ValidationError.at(["messages"], f"an append carries 1 to {MAX_BATCH} messages")
    batch = []
    for index, message in enumerate(messages):
        if isinstance(message, MessageInput):
            check_content_cap(message, settings.max_content_chars, ("messages", index))
        else:
            message = validate_model(MessageInput, message, settings, loc=("messages", index))
        batch.append(message)
    seen: set[str] = set()
    for index, message in enumerate(batch):
        for call in message.tool_calls or ():
            if call.id in seen:
                raise ValidationError.at(
                    ["messages", index, "tool_calls"],
                    f"tool call id {call.id!r} is used twice in this batch",
                )
            seen.add(call.id)
    return batch


def batch_params(batch: Sequence[MessageInput]) -> dict[str, list[Any]]:
    """One array per column (append_messages in sql/messages.sql); JSON
    columns travel as JSON text."""
    return {
        "roles": [m.role for m in batch],
        "contents": [m.content for m in batch],
        "names": [m.name for m in batch],
        "tool_calls": [
            None if m.tool_calls is None else dumps([c.model_dump() for c in m.tool_calls])
            for m in batch
        ],
        "tool_call_ids": [m.tool_call_id for m in batch],
        "metadatas": [dumps(m.metadata) for m in batch],
        "items": [None] * len(batch),
        "item_keys": [None] * len(batch),
    }


def answered_call_ids(batch: Sequence[MessageInput | None]) -> list[str]:
    return [m.tool_call_id for m in batch if m is not None and m.tool_call_id is not None]


def refusal(
    diagnosis: Row | None,
    batch: Sequence[MessageInput | None],
    expected_last_seq: int | None,
    parent_seq: int | None = None,
    *,
    loc: tuple[str, str] = ("messages", "tool_call_id"),
) -> Exception | None:
    """Why append_messages stored nothing, from diagnose_append's row; None
    when nothing explains it (a tool call appended concurrently: retry)."""
    if diagnosis is None:
        return NotFound("conversation")
    tail_seq: int = diagnosis["tail_seq"]
    if expected_last_seq is not None and tail_seq != expected_last_seq:
        return SeqConflict(expected_last_seq, tail_seq)
    if not diagnosis["parent_on_path"]:
        return ValidationError.at(
            ["parent_seq"],
            f"parent_seq {parent_seq} is not a message on the conversation's active path "
            "(switch to its branch first)",
        )
    known = set(diagnosis["known_call_ids"])
    for index, message in enumerate(batch):
        if message is None:
            continue
        if message.tool_call_id is not None and message.tool_call_id not in known:
            return ValidationError.at(
                [loc[0], index, loc[1]],
                f"tool_call_id {message.tool_call_id!r} does not answer a tool call "
                "of an earlier assistant message on this message's path",
            )
        known.update(call.id for call in message.tool_calls or ())
    return None

"""Responses items: a conversation as OpenAI Responses items (issue 12).

Items live in the messages table (migrations/0013), one row per item added,
in the same seq space, branch tree and active path as the chat-completions
messages. An item is stored verbatim (``item``); one that has a
chat-completions form also fills the message columns, so every
chat-completions read sees it as that message; one without (reasoning,
web_search_call, types chatstore does not know) has a NULL role and is left
out of those reads. A row appended as a chat-completions message (item
NULL) reads back as the items it stands for. The mapping, both ways:

* a message (``{"role", "content"}``, or ``"type": "message"``) whose
  content is text or has text parts: a user/assistant/system/developer
  message with that text (parts joined by a newline);
* ``function_call``: an assistant message with one tool call
  ``{id: call_id, type: function, function: {name, arguments}}``;
* ``function_call_output``: a tool message answering ``call_id`` (which
  must be a call of the path, as for any tool message);
* back: user/system/developer -> a message with an ``input_text`` part;
  assistant -> a message with an ``output_text`` part when it has content,
  then one ``function_call`` per tool call; tool -> ``function_call_output``.

Ids (``Item.id``) are unique within a conversation, so that an id names
one item (paging after it, get, delete). An item keeps its verbatim JSON
whatever its id; its id is its own ``"id"`` when that is usable (a
non-empty string with no "/", not "." or "..", not of the derived form
below, and not already the id of another item of the conversation, on any
branch), decided when it is added, under the conversation's lock, and
stored as the row's ``item_key`` (migrations/0013). Otherwise it is derived
from its row's seq (``msg_<seq>``, ``fc_<seq>_<i>``, ``fco_<seq>``,
``rs_<seq>``, ``item_<seq>``), as for every chat-completions row.

Long because: the two mappings, the ids, and the five operations on them
(add, list, get, delete, pop, clear) read best side by side.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter

from chatstore import idempotency
from chatstore.database import Database
from chatstore.errors import NotFound, ValidationError
from chatstore.ids import NO_BEFORE, ConversationId, conversation_uuid
from chatstore.messages import append_rows, lock
from chatstore.models import MAX_BATCH, Item, ItemPage, MessageInput, Row
from chatstore.pool import dumps
from chatstore.validation import validate_model

Order = Literal["asc", "desc"]

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")
# The rows a list reads at a time (each row is one item or more).
CHUNK_ROWS = 200

_ITEMS = TypeAdapter(list[Item])
_DERIVED_ID = re.compile(r"^(?:msg|fc|fco|rs|item)_([1-9][0-9]{0,18})(?:_[0-9]{1,9})?$")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


# -- item -> row ------------------------------------------------------------


@dataclass(frozen=True)
class _Converted:
    item: dict[str, Any]
    chat: MessageInput | None  # its chat-completions form, if it has one


def _storable(value: Any, loc: list[str | int], depth: int = 0) -> None:
    """JSON that PostgreSQL's jsonb stores as it is: objects with string
    keys, strings without U+0000 or lone surrogates, finite numbers."""
    if depth > 64:
        raise ValidationError.at(loc, "is nested too deeply (at most 64 levels)")
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is not None:
            what = "the NUL character (U+0000)" if found.group() == "\x00" else "a lone surrogate"
            raise ValidationError.at(loc, f"must not contain {what}")
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise ValidationError.at(loc, "object keys must be strings")
            _storable(key, loc, depth + 1)
            _storable(inner, [*loc, key], depth + 1)
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            _storable(inner, [*loc, index], depth + 1)
    elif value is None or isinstance(value, bool):
        return
    elif isinstance(value, int):
        # About 1,000 digits: well within jsonb's numeric and Python's
        # int-to-text limit (4,300 digits), which would fail as a 500.
        if value.bit_length() > 3300:
            raise ValidationError.at(loc, "integers must have at most 1,000 digits")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationError.at(loc, "numbers must be finite")
    else:
        raise ValidationError.at(loc, f"is not JSON ({type(value).__name__})")


# An item's own id is an index key (messages_item_key_idx), and a btree
# entry holds at most about 2,700 bytes: ids are bounded well below.
MAX_ID_CHARS = 255


def _check_id(item: Mapping[str, Any], loc: list[str | int]) -> None:
    given = item.get("id")
    if given is not None and (not isinstance(given, str) or len(given) > MAX_ID_CHARS):
        raise ValidationError.at(
            [*loc, "id"], f"must be a string of at most {MAX_ID_CHARS} characters"
        )


def _text_of(content: Any, loc: list[str | int]) -> str | None:
    """A message's text: the string, or its text parts joined; None when it
    has no text part."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValidationError.at([*loc, "content"], "must be a string or a list of content parts")
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise ValidationError.at(
                [*loc, "content", index], "a content part is an object with a type"
            )
        if part["type"] in TEXT_PARTS:
            if not isinstance(part.get("text"), str):
                raise ValidationError.at([*loc, "content", index, "text"], "must be a string")
            texts.append(part["text"])
    return "\n".join(texts) if texts else None


def _required_str(item: Mapping[str, Any], field: str, loc: list[str | int]) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value:
        raise ValidationError.at([*loc, field], "is required (a non-empty string)")
    return value


def _chat_form(item: Mapping[str, Any], loc: list[str | int]) -> dict[str, Any] | None:
    """The chat-completions message an item stands for, or None."""
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"
    if not isinstance(kind, str):
        raise ValidationError.at(
            [*loc, "type"], "an item has a type (or is a role/content message)"
        )
    if kind == "message":
        role = item.get("role")
        if role not in MESSAGE_ROLES:
            raise ValidationError.at(
                [*loc, "role"], f"a message's role is one of {', '.join(MESSAGE_ROLES)}"
            )
        if "content" not in item:
            raise ValidationError.at([*loc, "content"], "a message has content")
        text = _text_of(item["content"], loc)
        return None if text is None else {"role": role, "content": text}
    if kind == "function_call":
        call_id = _required_str(item, "call_id", loc)
        name = _required_str(item, "name", loc)
        arguments = item.get("arguments")
        if not isinstance(arguments, str):
            raise ValidationError.at([*loc, "arguments"], "is required (a string)")
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind == "function_call_output":
        call_id = _required_str(item, "call_id", loc)
        output = item.get("output")
        if isinstance(output, str):
            text = output
        elif isinstance(output, list):
            text = _text_of(output, loc)
            if text is None:
                text = json.dumps(output, ensure_ascii=False)
        else:
            raise ValidationError.at([*loc, "output"], "is required (a string or a list of parts)")
        return {"role": "tool", "content": text, "tool_call_id": call_id}
    return None


def convert(items: Sequence[Mapping[str, Any]], db: Database) -> list[_Converted]:
    """1 to MAX_BATCH valid items, each as it will be stored and with its
    chat-completions form."""
    if isinstance(items, str | bytes | Mapping) or not 1 <= len(items) <= MAX_BATCH:
        raise ValidationError.at(["items"], f"an append carries 1 to {MAX_BATCH} items")
    converted = []
    seen_calls: set[str] = set()
    for index, given in enumerate(items):
        loc: list[str | int] = ["items", index]
        if not isinstance(given, Mapping):
            raise ValidationError.at(loc, "an item is a JSON object")
        _storable(given, loc)
        item = dict(given)
        _check_id(item, loc)
        size = len(dumps(item))
        if size > db.settings.max_content_chars:
            raise ValidationError.at(
                loc, f"must be at most {db.settings.max_content_chars} characters as JSON"
            )
        form = _chat_form(item, loc)
        chat = None
        if form is not None:
            chat = validate_model(MessageInput, form, db.settings, loc=loc)
            for call in chat.tool_calls or ():
                if call.id in seen_calls:
                    raise ValidationError.at(
                        [*loc, "call_id"], f"call_id {call.id!r} is used twice in this batch"
                    )
                seen_calls.add(call.id)
        converted.append(_Converted(item, chat))
    return converted


def _params(
    batch: Sequence[_Converted], keys: Sequence[str | None] | None = None
) -> dict[str, list[Any]]:
    """append_messages' arrays (sql/messages.sql), one element per item;
    ``keys``: each item's key (_keys), all None when not given."""
    chats = [c.chat for c in batch]
    return {
        "roles": [None if m is None else m.role for m in chats],
        "contents": [None if m is None else m.content for m in chats],
        "names": [None] * len(batch),
        "tool_calls": [
            None
            if m is None or m.tool_calls is None
            else dumps([call.model_dump() for call in m.tool_calls])
            for m in chats
        ],
        "tool_call_ids": [None if m is None else m.tool_call_id for m in chats],
        "metadatas": ["{}"] * len(batch),
        "items": [dumps(c.item) for c in batch],
        "item_keys": list(keys) if keys is not None else [None] * len(batch),
    }


def _usable_id(item: Mapping[str, Any]) -> str | None:
    """The item's own id, when it may be its chatstore id as far as its
    form goes: a string routable as one URL path segment, and never one
    chatstore derives (those belong to the rows of their seq)."""
    given = item.get("id")
    if not isinstance(given, str) or not given or "/" in given or given in (".", ".."):
        return None
    return None if _DERIVED_ID.match(given) else given


async def _keys(
    db: Database, user_id: str, conversation: uuid.UUID, batch: Sequence[_Converted]
) -> list[str | None]:
    """Each item's key: its own id when usable and not taken (by an item
    of the conversation, or an earlier one of the batch), else None (a
    derived id). In a transaction holding the conversation's lock."""
    wanted = [_usable_id(c.item) for c in batch]
    candidates = sorted({key for key in wanted if key is not None})
    if not candidates:
        return wanted
    rows = await db.many(
        "taken_item_keys", user_id=user_id, conversation_id=conversation, item_keys=candidates
    )
    taken = {row["item_key"] for row in rows}
    keys: list[str | None] = []
    for key in wanted:
        if key is not None and key in taken:
            key = None
        if key is not None:
            taken.add(key)
        keys.append(key)
    return keys


# -- row -> items -----------------------------------------------------------


_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def items_of(row: Row) -> list[Item]:
    """The items a row stands for, in order: its item, or those derived
    from its chat-completions message."""
    seq: int = row["seq"]
    created_at = row["created_at"]
    stored = row["item"]
    if stored is not None:
        # An explicit "type": null reads as no type, as _chat_form reads it.
        kind = stored.get("type")
        if kind is None and "role" in stored:
            kind = "message"
        prefix = _PREFIXES.get(kind, "rs" if kind == "reasoning" else "item")
        item_id = row["item_key"] or f"{prefix}_{seq}"
        return [Item(seq=seq, id=item_id, item=stored, created_at=created_at)]
    role: str = row["role"]
    content: str | None = row["content"]
    if role == "tool":
        derived = {
            "type": "function_call_output",
            "call_id": row["tool_call_id"],
            "output": content,
        }
        return [Item(seq=seq, id=f"fco_{seq}", item=derived, created_at=created_at)]
    found = []
    if content is not None:
        part: dict[str, Any] = (
            {"type": "output_text", "text": content, "annotations": []}
            if role == "assistant"
            else {"type": "input_text", "text": content}
        )
        message = {"type": "message", "role": role, "content": [part]}
        found.append(Item(seq=seq, id=f"msg_{seq}", item=message, created_at=created_at))
    for index, call in enumerate(row["tool_calls"] or ()):
        function = call["function"]
        derived = {
            "type": "function_call",
            "call_id": call["id"],
            "name": function["name"],
            "arguments": function["arguments"],
        }
        found.append(Item(seq=seq, id=f"fc_{seq}_{index}", item=derived, created_at=created_at))
    return found


# -- the operations -----------------------------------------------------------


async def add(
    db: Database,
    user_id: str,
    conversation_id: ConversationId,
    items: Sequence[Mapping[str, Any]],
    *,
    idempotency_key: str | None = None,
) -> list[Item]:
    """Append ``items`` atomically at the active leaf, in order, or nothing."""
    conversation = conversation_uuid(conversation_id)
    batch = convert(items, db)

    async def store(keys: Sequence[str | None] | None) -> list[Item]:
        rows = await append_rows(
            db,
            user_id,
            conversation,
            [c.chat for c in batch],
            _params(batch, keys),
            None,
            None,
            loc=("items", "call_id"),
        )
        return [item for row in rows for item in items_of(row)]

    async def append() -> list[Item]:
        if not any(_usable_id(c.item) for c in batch):
            return await store(None)  # no key to choose: one statement
        async with db.transaction(writes=(user_id, conversation)):
            # The keys are chosen and stored under the lock: no concurrent
            # append takes one in between.
            if not await lock(db, user_id, conversation):
                raise NotFound("conversation")
            return await store(await _keys(db, user_id, conversation, batch))

    if idempotency_key is None:
        return await append()
    request = idempotency.fingerprint("add_items", str(conversation), [c.item for c in batch])
    stored, _ = await idempotency.run_once(
        db,
        user_id,
        idempotency_key,
        request,
        append,
        _ITEMS,
        holds_of=lambda stored: idempotency.Holds.messages(conversation, [i.seq for i in stored]),
        conversation_id=conversation,
    )
    return stored


async def page(
    db: Database,
    user_id: str,
    conversation_id: ConversationId,
    *,
    limit: int | None = None,
    order: Order = "asc",
    after: str | None = None,
) -> ItemPage:
    """The active path's items in ``order``, after the item ``after``
    (exclusive); every one when ``limit`` is None."""
    if limit is not None and limit < 1:
        raise ValidationError.at(["query", "limit"], "limit must be 1 or more")
    if order not in ("asc", "desc"):
        raise ValidationError.at(["query", "order"], "order must be 'asc' or 'desc'")
    conversation = conversation_uuid(conversation_id)
    # Where to start: the rows after the cursor's row, less the cursor's
    # row's items up to and including it.
    skip_seq, skip_to = 0, -1
    if after is not None:
        skip_seq, skip_to = await _locate(db, user_id, conversation, after)
        bound = skip_seq - 1 if order == "asc" else skip_seq + 1
    else:
        bound = 0 if order == "asc" else NO_BEFORE
    wanted = None if limit is None else limit + 1
    found: list[Item] = []
    while wanted is None or len(found) < wanted:
        chunk = CHUNK_ROWS if wanted is None else min(CHUNK_ROWS, wanted + 1)
        rows = await db.many(
            f"list_item_rows_{order}",
            user_id=user_id,
            conversation_id=conversation,
            limit=chunk,
            **({"after": bound} if order == "asc" else {"before": bound}),
        )
        if not rows:
            raise NotFound("conversation")
        present = [row for row in rows if row["seq"] is not None]
        for row in present:
            pairs = list(enumerate(items_of(row)))
            if order == "desc":
                pairs.reverse()
            if row["seq"] == skip_seq:
                pairs = [
                    (i, it) for i, it in pairs if (i > skip_to if order == "asc" else i < skip_to)
                ]
            found.extend(item for _, item in pairs)
        if len(present) < chunk:
            break
        bound = present[-1]["seq"]
    data = found if limit is None else found[:limit]
    return ItemPage(items=data, has_more=limit is not None and len(found) > limit)


async def _locate(
    db: Database, user_id: str, conversation: uuid.UUID, item_id: str
) -> tuple[int, int]:
    """The row seq of the item ``item_id`` of the active path, and its index
    among that row's items; NotFound when there is none."""
    if not isinstance(item_id, str) or not item_id or _UNSTORABLE.search(item_id):
        raise NotFound("item")
    seq = await db.scalar(
        "find_item_by_key", user_id=user_id, conversation_id=conversation, item_id=item_id
    )
    if seq is not None:
        return seq, 0
    derived = _DERIVED_ID.match(item_id)
    if derived is not None and int(derived.group(1)) <= NO_BEFORE:
        row = await db.one(
            "get_item_row",
            user_id=user_id,
            conversation_id=conversation,
            seq=int(derived.group(1)),
        )
        if row is not None:
            for index, item in enumerate(items_of(row)):
                if item.id == item_id:
                    return row["seq"], index
    raise NotFound("item")


async def get(db: Database, user_id: str, conversation_id: ConversationId, item_id: str) -> Item:
    conversation = conversation_uuid(conversation_id, "item")
    seq, index = await _locate(db, user_id, conversation, item_id)
    row = await db.one("get_item_row", user_id=user_id, conversation_id=conversation, seq=seq)
    if row is None:  # deleted in between
        raise NotFound("item")
    return items_of(row)[index]


async def delete(db: Database, user_id: str, conversation_id: ConversationId, item_id: str) -> None:
    """Delete one item. An item derived from a chat-completions message
    that stands for several (an assistant message with tool calls) is not
    deleted alone: that would change the message (422; delete the message,
    or pop)."""
    conversation = conversation_uuid(conversation_id, "item")
    async with db.transaction(writes=(user_id, conversation)):
        if not await lock(db, user_id, conversation):
            raise NotFound("item")
        seq, _ = await _locate(db, user_id, conversation, item_id)
        row = await db.one("get_item_row", user_id=user_id, conversation_id=conversation, seq=seq)
        if row is None:  # pragma: no cover - the lock is held
            raise NotFound("item")
        if len(items_of(row)) > 1:
            raise ValidationError.at(
                ["item_id"],
                f"item {item_id!r} is one of the items of chat message {seq} "
                "(an assistant message with tool calls): delete that message instead",
            )
        await _delete_row(db, user_id, conversation, seq)


async def _delete_row(db: Database, user_id: str, conversation: uuid.UUID, seq: int) -> None:
    """In a transaction holding the conversation's lock."""
    await db.execrows(
        "delete_message", user_id=user_id, conversation_id=conversation, seq=seq, any_row=True
    )
    await db.exec(
        "delete_idempotency_keys_holding_messages",
        user_id=user_id,
        conversation_id=conversation,
        first_seq=seq,
        last_seq=seq,
    )


async def pop(db: Database, user_id: str, conversation_id: ConversationId) -> Item | None:
    """Remove the newest item of the active path and return it; None when
    the conversation is empty. Pops queue on the conversation's lock: each
    item is returned once. When the newest row stands for several items (an
    assistant message with tool calls), the others are put back as items."""
    conversation = conversation_uuid(conversation_id)
    async with db.transaction(writes=(user_id, conversation)):
        if not await lock(db, user_id, conversation):
            raise NotFound("conversation")
        row = await db.one("newest_item_row", user_id=user_id, conversation_id=conversation)
        if row is None:
            return None
        found = items_of(row)
        await _delete_row(db, user_id, conversation, row["seq"])
        if len(found) > 1:
            rest = convert([item.item for item in found[:-1]], db)
            await append_rows(
                db,
                user_id,
                conversation,
                [c.chat for c in rest],
                _params(rest),
                None,
                None,
                loc=("items", "call_id"),
            )
        return found[-1]


async def clear(db: Database, user_id: str, conversation_id: ConversationId) -> None:
    """Delete every item and message of the conversation; it stays."""
    conversation = conversation_uuid(conversation_id)
    async with db.transaction(writes=(user_id, conversation)):
        if not await lock(db, user_id, conversation):
            raise NotFound("conversation")
        await db.scalar("clear_items", user_id=user_id, conversation_id=conversation)
        await db.exec(
            "delete_idempotency_keys_holding_messages",
            user_id=user_id,
            conversation_id=conversation,
            first_seq=1,
            last_seq=NO_BEFORE,
        )

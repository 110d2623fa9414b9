"""The chatbot's own flow on top of the store: history windows, and what a
responder is shown of them (a chat turn, its message and the reply, is
chatstore/chat_turn.py)."""

from __future__ import annotations

from collections.abc import Sequence

from chatstore.config import Settings
from chatstore.database import Database
from chatstore.errors import NotFound, ValidationError
from chatstore.ids import NO_BEFORE, ConversationId, conversation_uuid
from chatstore.models import Message, MessageInput
from chatstore.tool_turns import merge_tool_turns
from chatstore.validation import check_limit

MAX_HISTORY = 1000


class History:
    __slots__ = ("has_more", "messages")

    def __init__(self, messages: list[Message], has_more: bool) -> None:
        self.messages = messages
        self.has_more = has_more


async def history(
    db: Database,
    user_id: str,
    conversation_id: ConversationId,
    *,
    limit: int = 50,
    before: int | None = None,
) -> History:
    """The latest ``limit`` messages before ``before``, oldest first, widened
    back so that no tool message is cut off from its assistant message."""
    check_limit(limit, MAX_HISTORY)
    if before is not None and not 1 <= before <= NO_BEFORE:
        raise ValidationError.at(["query", "before"], "before must be a seq (1 or more)")
    rows = await db.many(
        "chat_history",
        user_id=user_id,
        conversation_id=conversation_uuid(conversation_id),
        before=NO_BEFORE if before is None else before,
        limit=limit,
    )
    if not rows:
        raise NotFound("conversation")
    messages = Message.from_rows(row for row in rows if row["seq"] is not None)
    return History(messages, bool(rows[0]["has_more"]))


# metadata["incomplete"]: a reply cut short (chatstore/chat_turn.py).
INCOMPLETE = "incomplete"


def message_chars(message: Message | MessageInput) -> int:
    """What a message weighs against the character budget."""
    size = len(message.content or "")
    for call in message.tool_calls or ():
        size += len(call.function.name) + len(call.function.arguments)
    return size


def within_budget(messages: Sequence[Message], budget: int, used: int) -> list[Message]:
    """The newest of ``messages`` whose characters, with ``used`` already
    spent, fit ``budget`` (0: no budget); never starting with a tool message
    cut off from its assistant tool call."""
    if budget == 0:
        return list(messages)
    start = len(messages)
    for index in range(len(messages) - 1, -1, -1):
        used += message_chars(messages[index])
        if used > budget:
            break
        start = index
    kept = list(messages[start:])
    while kept and kept[0].role == "tool":
        kept.pop(0)
    return kept


async def responder_history(
    db: Database, settings: Settings, user_id: str, user_message: Message
) -> list[Message]:
    """What a responder is shown before ``user_message``: the messages
    before it (at most CHATSTORE_RESPONDER_HISTORY_MESSAGES, widened back so
    that no tool message is cut off from its assistant tool call), less the
    replies stored incomplete, then cut from the oldest side to
    CHATSTORE_RESPONDER_HISTORY_CHARS characters (content and tool-call
    arguments, the new message counted first; a leading tool message whose
    call was cut goes too). Consecutive assistant messages of one tool turn
    (parallel function_call items) are one message with all their calls
    (chatstore/tool_turns.py). The new message itself is always sent."""
    window = await history(
        db,
        user_id,
        user_message.conversation_id,
        limit=settings.responder_history_messages,
        before=user_message.seq,
    )
    complete = [m for m in window.messages if INCOMPLETE not in m.metadata]
    # Parallel tool calls (one function_call item each) as one assistant
    # message, before the budget: it keeps or cuts the turn whole.
    turns = merge_tool_turns(
        complete,
        getattr,
        lambda m, calls: m.model_copy(update={"tool_calls": calls}),
    )
    return within_budget(turns, settings.responder_history_chars, used=message_chars(user_message))


__all__ = ["History", "history", "responder_history", "within_budget"]

"""The chatbot's own flow on top of the store: history windows and exchanges."""

from __future__ import annotations

from chatstore import messages
from chatstore.database import Database
from chatstore.errors import NotFound, ValidationError
from chatstore.ids import NO_BEFORE, ConversationId, conversation_uuid
from chatstore.models import ChatMessageInput, Message, MessageInput
from chatstore.responder import Responder
from chatstore.validation import check_limit, validate_model

# How much history a responder sees by default.
RESPONDER_HISTORY = 50
MAX_HISTORY = 1000


class History:
    __slots__ = ("has_more", "messages")

    def __init__(self, messages: list[Message], has_more: bool) -> None:
        self.messages = messages
        self.has_more = has_more


class Exchange:
    __slots__ = ("reply", "user_message")

    def __init__(self, user_message: Message, reply: Message) -> None:
        self.user_message = user_message
        self.reply = reply


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
    messages = [Message.from_row(row) for row in rows if row["seq"] is not None]
    return History(messages, bool(rows[0]["has_more"]))


class Reply:
    """The user's message and the responder's reply, not stored yet."""

    __slots__ = ("message", "reply")

    def __init__(self, message: MessageInput, reply: MessageInput) -> None:
        self.message = message
        self.reply = reply


async def think(
    db: Database,
    responder: Responder,
    user_id: str,
    conversation_id: ConversationId,
    content: str | ChatMessageInput,
) -> Reply:
    """Ask the responder, holding no connection and no transaction while it
    thinks: the history is read first, in a statement of its own."""
    given = {"content": content} if isinstance(content, str) else content
    data = validate_model(ChatMessageInput, given, db.settings)
    message = MessageInput(role="user", content=data.content)
    recent = await history(db, user_id, conversation_id, limit=RESPONDER_HISTORY)
    reply = await responder.respond(recent.messages, message)
    if reply.role != "assistant":
        raise TypeError(f"a responder must reply as the assistant, not {reply.role!r}")
    return Reply(message, reply)


async def store_reply(
    db: Database, user_id: str, conversation_id: ConversationId, reply: Reply
) -> Exchange:
    """Store the user's message and the reply in one statement."""
    stored = await messages.append(db, user_id, conversation_id, [reply.message, reply.reply])
    return Exchange(stored[0], stored[1])


async def exchange(
    db: Database,
    responder: Responder,
    user_id: str,
    conversation_id: ConversationId,
    content: str | ChatMessageInput,
) -> Exchange:
    """Ask the responder, then store the user's message and its reply together."""
    reply = await think(db, responder, user_id, conversation_id, content)
    return await store_reply(db, user_id, conversation_id, reply)


__all__ = ["Exchange", "History", "Reply", "exchange", "history", "store_reply", "think"]

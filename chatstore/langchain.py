"""A chatstore conversation as LangChain's chat message history.

``ChatStoreMessageHistory(store, user_id, conversation_id)`` is a
langchain-core ``BaseChatMessageHistory`` over one conversation, for
``RunnableWithMessageHistory`` and anything else that takes one. It needs
the ``langchain`` extra (``pip install 'chatstore[langchain]'``); nothing
else in chatstore imports it.

The async methods are native (the store is asyncio). The sync ones, which
LangChain's sync paths call, run on the event loop the history was last
used on from another thread; called on that loop's own thread they raise
RuntimeError at once, since waiting there for the loop would deadlock it.

Messages map to chatstore's chat-completions messages and back:
SystemMessage (a ``developer`` one keeps its role in ``additional_kwargs``
as langchain-openai does), HumanMessage, AIMessage (its ``tool_calls``, with
``args`` as the JSON text of ``function.arguments``; no text is a null
content) and ToolMessage (``tool_call_id``); ``name`` and ``content`` both
ways. Metadata is chatstore's own and is not carried.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        HumanMessage,
        InvalidToolCall,
        SystemMessage,
        ToolCall,
        ToolMessage,
    )
except ImportError as error:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "chatstore.langchain needs langchain-core: pip install 'chatstore[langchain]'"
    ) from error

from chatstore.errors import ValidationError
from chatstore.ids import ConversationId
from chatstore.models import Message
from chatstore.store import ChatStore

__all__ = ["ChatStoreMessageHistory", "from_chatstore", "to_chatstore"]

T = TypeVar("T")

# What langchain-openai puts in additional_kwargs for a "developer" message.
_OPENAI_ROLE = "__openai_role__"
# Messages read a page at a time (the store's largest page).
_PAGE = 1000


class ChatStoreMessageHistory(BaseChatMessageHistory):
    """The active path of one of ``user_id``'s conversations. Another
    user's conversation raises :class:`chatstore.NotFound`, as a missing one."""

    def __init__(self, store: ChatStore, user_id: str, conversation_id: ConversationId) -> None:
        self.store = store
        self.user_id = user_id
        self.conversation_id = conversation_id
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- async: the real work ----------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        self._loop = asyncio.get_running_loop()
        found: list[BaseMessage] = []
        after: int | None = None
        while True:
            page = await self.store.list_messages(
                self.user_id, self.conversation_id, limit=_PAGE, after=after
            )
            found.extend(from_chatstore(m) for m in page.data)
            if not page.has_more:
                return found
            after = page.last_seq

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """All of ``messages`` in one append (atomic: all or none)."""
        self._loop = asyncio.get_running_loop()
        if messages:
            await self.store.append_messages(
                self.user_id, self.conversation_id, [to_chatstore(m) for m in messages]
            )

    async def aclear(self) -> None:
        """Delete the messages; the conversation stays."""
        self._loop = asyncio.get_running_loop()
        await self.store.truncate_messages(self.user_id, self.conversation_id, 1)

    # -- sync: the async ones on the store's loop ----------------------------

    # langchain-core declares ``messages`` an attribute; its docs override it
    # with a property, as here (read from the store on each access).
    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return self._wait(self.aget_messages())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self._wait(self.aadd_messages(messages))

    def clear(self) -> None:
        self._wait(self.aclear())

    def _wait(self, work: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            work.close()
            raise RuntimeError(
                "ChatStoreMessageHistory: a sync method called on a running event loop "
                "would block it; await aget_messages / aadd_messages / aclear instead"
            )
        if loop is None or not loop.is_running():
            work.close()
            raise RuntimeError(
                "ChatStoreMessageHistory: a sync method needs the store's event loop running "
                "in another thread (use the history with await once on it first)"
            )
        return asyncio.run_coroutine_threadsafe(work, loop).result()


# -- the mapping -----------------------------------------------------------


def to_chatstore(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message as a chatstore message (MessageInput's fields)."""
    content = message.content
    if not isinstance(content, str):
        raise ValidationError.at(
            ["content"], "chatstore stores text content only, not a list of content blocks"
        )
    fields: dict[str, Any] = {"content": content}
    if message.name is not None:
        fields["name"] = message.name
    if isinstance(message, HumanMessage):
        return {"role": "user", **fields}
    if isinstance(message, SystemMessage):
        role = message.additional_kwargs.get(_OPENAI_ROLE, "system")
        return {"role": "developer" if role == "developer" else "system", **fields}
    if isinstance(message, ToolMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id, **fields}
    if isinstance(message, AIMessage):
        calls = [
            _call(c["id"], c["name"], json.dumps(c["args"], ensure_ascii=False))
            for c in message.tool_calls
        ] + [_call(c["id"], c["name"], c["args"]) for c in message.invalid_tool_calls]
        if calls:
            fields["tool_calls"] = calls
            if content == "":
                fields["content"] = None
        return {"role": "assistant", **fields}
    raise ValidationError.at(
        ["type"], f"chatstore stores no LangChain {type(message).__name__} (not a chat message)"
    )


def _call(call_id: str | None, name: str | None, arguments: str | None) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def from_chatstore(message: Message) -> BaseMessage:
    """A stored chatstore message as the LangChain message it came from."""
    content = message.content or ""
    name = message.name
    if message.role == "user":
        return HumanMessage(content=content, name=name)
    if message.role in ("system", "developer"):
        extra = {_OPENAI_ROLE: "developer"} if message.role == "developer" else {}
        return SystemMessage(content=content, name=name, additional_kwargs=extra)
    if message.role == "tool":
        assert message.tool_call_id is not None  # the schema's CHECK holds it
        return ToolMessage(content=content, name=name, tool_call_id=message.tool_call_id)
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for call in message.tool_calls or ():
        problem: str | None
        try:
            args = json.loads(call.function.arguments)
        except ValueError as error:
            args, problem = None, f"arguments are not JSON: {error}"
        else:
            problem = None if isinstance(args, dict) else "arguments are not a JSON object"
        if problem is None:
            calls.append(ToolCall(name=call.function.name, args=args, id=call.id, type="tool_call"))
        else:
            invalid.append(
                InvalidToolCall(
                    name=call.function.name,
                    args=call.function.arguments,
                    id=call.id,
                    error=problem,
                    type="invalid_tool_call",
                )
            )
    return AIMessage(content=content, name=name, tool_calls=calls, invalid_tool_calls=invalid)

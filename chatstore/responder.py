"""Where the chatbot's replies come from: a pluggable Responder.

A responder gets the conversation's recent history (already stored
messages, oldest first, never starting with an orphaned tool message, and
without the replies stored incomplete) and the user's new message (stored
already), and returns the assistant's reply. A StreamingResponder also
streams it: an async iterator of ReplyChunks (text deltas, and tool calls or
metadata when it has them), which chatstore forwards to a client that asked
for server-sent events and stores once complete (chatstore/chat_turn.py). A
plain Responder streams its whole reply as one chunk.

CHATSTORE_RESPONDER chooses it: ``echo`` (the default), ``openai`` (any
OpenAI-compatible endpoint, chatstore/openai_responder.py; the ``openai``
extra) or ``package.module:attribute`` naming a Responder instance or a
zero-argument factory of one.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from chatstore.models import Message, MessageInput, ToolCall

if TYPE_CHECKING:
    from chatstore.config import Settings


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyChunk:
    """A piece of a streamed reply: text to append, and the reply's tool
    calls or metadata (each replaces what an earlier chunk gave)."""

    text: str = ""
    tool_calls: list[ToolCall] | None = None
    metadata: dict[str, str] | None = None


@runtime_checkable
class Responder(Protocol):
    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput: ...


@runtime_checkable
class StreamingResponder(Responder, Protocol):
    def stream(
        self, history: Sequence[Message], message: MessageInput
    ) -> AsyncIterator[ReplyChunk]: ...


async def stream_reply(
    responder: Responder, history: Sequence[Message], message: MessageInput
) -> AsyncGenerator[ReplyChunk, None]:
    """The responder's reply as chunks, whichever kind it is. Closing it
    closes the responder's stream (its HTTP response) at once."""
    if isinstance(responder, StreamingResponder):
        chunks = responder.stream(history, message)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()
        return
    reply = await responder.respond(history, message)
    if reply.role != "assistant":
        raise TypeError(f"a responder must reply as the assistant, not {reply.role!r}")
    yield ReplyChunk(reply.content or "", reply.tool_calls, reply.metadata)


class EchoResponder:
    """Replies with the user's own content, streamed word by word: a
    stand-in until a model is plugged in."""

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        return MessageInput(role="assistant", content=message.content)

    async def stream(
        self, history: Sequence[Message], message: MessageInput
    ) -> AsyncIterator[ReplyChunk]:
        content = message.content or ""
        # Each word with the spaces after it: the deltas join back exactly.
        start = 0
        while start < len(content):
            end = start
            while end < len(content) and not content[end].isspace():
                end += 1
            while end < len(content) and content[end].isspace():
                end += 1
            yield ReplyChunk(content[start:end])
            start = end


# The responders chatstore ships beyond echo, by name: the module:attribute
# of a factory taking the Settings, imported only when chosen (the openai
# one needs the openai extra).
BUILTIN = {"openai": "chatstore.openai_responder:OpenAIResponder.from_settings"}


def load_responder(spec: str, settings: Settings | None = None) -> Responder:
    if spec == "echo":
        return EchoResponder()
    if spec in BUILTIN:
        from chatstore.config import Settings

        factory = _resolve(BUILTIN[spec])
        target: object = factory(settings or Settings.from_env())
    else:
        target = _resolve(spec)
        if not isinstance(target, Responder) and callable(target):
            target = target()
    if not isinstance(target, Responder):
        raise ValueError(f"{spec} is not a Responder (an object with async respond())")
    return target


def _resolve(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"CHATSTORE_RESPONDER must be 'echo', 'openai' or 'module:attribute', got {spec!r}"
        )
    target: Any = importlib.import_module(module_name)
    for name in attribute.split("."):
        target = getattr(target, name)
    return target

"""Where the chatbot's replies come from: a pluggable Responder.

A responder gets the conversation's recent history (already stored
messages, oldest first, never starting with an orphaned tool message) and the
user's new message, and returns the assistant's reply. chatstore stores both
in one transaction. CHATSTORE_RESPONDER chooses it: ``echo`` (the default)
or ``package.module:attribute`` naming a Responder instance or a
zero-argument factory of one.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from chatstore.models import Message, MessageInput


@runtime_checkable
class Responder(Protocol):
    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput: ...


class EchoResponder:
    """Replies with the user's own content: a stand-in until a model is plugged in."""

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        return MessageInput(role="assistant", content=message.content)


def load_responder(spec: str) -> Responder:
    if spec == "echo":
        return EchoResponder()
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"CHATSTORE_RESPONDER must be 'echo' or 'module:attribute', got {spec!r}")
    target: object = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(target, Responder) and callable(target):
        target = target()
    if not isinstance(target, Responder):
        raise ValueError(f"{spec} is not a Responder (an object with async respond())")
    return target

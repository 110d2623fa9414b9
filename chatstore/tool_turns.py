"""One assistant message per tool turn, for the chat-completions messages
that leave chatstore for a model or a file (issue 12).

Responses items store parallel tool calls as one ``function_call`` item
each, so a turn [user, call c1, call c2, output c1, output c2] reads as
[user, assistant{c1}, assistant{c2}, tool c1, tool c2], which OpenAI's chat
completions refuse: an assistant message with tool calls must be followed
by the tool messages answering each of them. ``merge_tool_turns`` makes
that [user, assistant{c1, c2}, tool c1, tool c2]: an assistant message
whose content is null joins the assistant message right before it, its
tool calls appended (that one's content, name and the rest kept). Used by
the responder's history (chatstore/chat.py) and the ``openai`` export
(chatstore/export.py); the messages list stays one row per seq.

Pure: the callers say how to read a message and how to give it more calls,
so that dicts (an export) and Message models (a history) share it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

M = TypeVar("M")


def merge_tool_turns(
    messages: Iterable[M],
    get: Callable[[M, str], Any],
    with_calls: Callable[[M, list[Any]], M],
) -> list[M]:
    """``messages`` with each assistant message of null content merged
    into the assistant message before it (``get(message, field)`` reads
    role/content/tool_calls; ``with_calls(message, calls)`` is ``message``
    with those tool calls)."""
    merged: list[M] = []
    for message in messages:
        if (
            merged
            and get(message, "role") == "assistant"
            and get(message, "content") is None
            and get(message, "tool_calls")
            and get(merged[-1], "role") == "assistant"
        ):
            before = merged[-1]
            calls = [*(get(before, "tool_calls") or ()), *get(message, "tool_calls")]
            merged[-1] = with_calls(before, calls)
        else:
            merged.append(message)
    return merged


def merge_dicts(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """merge_tool_turns over chat-completions messages as dicts."""
    return merge_tool_turns(
        messages, lambda m, field: m.get(field), lambda m, calls: {**m, "tool_calls": calls}
    )


__all__ = ["merge_dicts", "merge_tool_turns"]

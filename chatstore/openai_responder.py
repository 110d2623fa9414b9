"""CHATSTORE_RESPONDER=openai: replies from any OpenAI-compatible
chat-completions endpoint (OpenAI, a local Ollama at
http://localhost:11434/v1, vLLM, ...) through the official ``openai``
client, installed with chatstore's ``openai`` extra.

The request is the conversation in chat-completions form: the system prompt
(CHATSTORE_SYSTEM_PROMPT) first, then the history chatstore chose
(chatstore/chat_turn.py: the message and character budgets), then the user's
new message. The reply streams (``stream=True``): text deltas as they come,
the tool calls the model makes assembled from theirs, and the model's name
and finish reason in the reply's metadata. The client does not retry on its
own (a failed turn is the client's to retry, idempotently) and gives up after
CHATSTORE_RESPONDER_TIMEOUT_SECONDS, as chatstore does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from chatstore.config import Settings
from chatstore.errors import ResponderError, ResponderTimeout
from chatstore.models import Message, MessageInput, ToolCall
from chatstore.responder import ReplyChunk

try:
    import openai
except ImportError as error:  # pragma: no cover - the extra is in the dev group
    raise ImportError(
        "CHATSTORE_RESPONDER=openai needs the openai package: pip install 'chatstore[openai]'"
    ) from error

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

# An OpenAI-compatible server that needs no key (Ollama) still gets one: the
# client refuses to start without.
NO_KEY = "unused"


def chat_message(message: Message | MessageInput) -> dict[str, Any]:
    """A stored message as a chat-completions ``messages`` item."""
    item: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        item["name"] = message.name
    if message.tool_calls is not None:
        item["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id is not None:
        item["tool_call_id"] = message.tool_call_id
    return item


class OpenAIResponder:
    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        system_prompt: str | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.system_prompt = system_prompt

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIResponder:
        if not settings.openai_model:
            raise ValueError("CHATSTORE_RESPONDER=openai needs CHATSTORE_OPENAI_MODEL")
        api_key = settings.openai_api_key
        if api_key is None and settings.openai_base_url is not None:
            api_key = NO_KEY
        client = openai.AsyncOpenAI(
            api_key=api_key,  # None: the client reads OPENAI_API_KEY
            base_url=settings.openai_base_url,
            timeout=settings.responder_timeout_seconds,
            max_retries=0,
        )
        return cls(client, settings.openai_model, system_prompt=settings.system_prompt)

    def messages(
        self, history: Sequence[Message], message: MessageInput
    ) -> list[ChatCompletionMessageParam]:
        """The request's ``messages``: system prompt, history, new message."""
        items = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        items.extend(chat_message(m) for m in history)
        items.append(chat_message(message))
        # Validated as MessageInput already: the chat-completions shape.
        return cast(list["ChatCompletionMessageParam"], items)

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        """The whole reply in one (non-streamed) request."""
        with _translated():
            completion = await self.client.chat.completions.create(
                model=self.model, messages=self.messages(history, message)
            )
        if not completion.choices:
            raise ResponderError("the model answered no choice")
        choice = completion.choices[0]
        calls = [
            ToolCall.model_validate(call.model_dump(include={"id", "type", "function"}))
            for call in choice.message.tool_calls or ()
        ]
        return MessageInput(
            role="assistant",
            content=choice.message.content if choice.message.content or not calls else None,
            tool_calls=calls or None,
            metadata=_metadata(completion.model, choice.finish_reason),
        )

    async def stream(
        self, history: Sequence[Message], message: MessageInput
    ) -> AsyncIterator[ReplyChunk]:
        """The reply as it streams: text deltas, then the tool calls and
        metadata. Closing it early closes the HTTP response."""
        calls: dict[int, dict[str, Any]] = {}
        model = finish = None
        with _translated():
            chunks = await self.client.chat.completions.create(
                model=self.model, messages=self.messages(history, message), stream=True
            )
            try:
                async for chunk in chunks:
                    model = chunk.model or model
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    finish = choice.finish_reason or finish
                    for call in choice.delta.tool_calls or ():
                        _add_call_delta(calls, call)
                    if choice.delta.content:
                        yield ReplyChunk(choice.delta.content)
            finally:
                await chunks.close()
        tool_calls = [ToolCall.model_validate(calls[index]) for index in sorted(calls)]
        yield ReplyChunk(tool_calls=tool_calls or None, metadata=_metadata(model, finish))

    async def aclose(self) -> None:
        await self.client.close()


def _add_call_delta(calls: dict[int, dict[str, Any]], delta: Any) -> None:
    """A streamed tool call comes in pieces keyed by index: id and name
    first, its arguments a fragment at a time."""
    call = calls.setdefault(
        delta.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if delta.id:
        call["id"] = delta.id
    if delta.function is not None:
        call["function"]["name"] += delta.function.name or ""
        call["function"]["arguments"] += delta.function.arguments or ""


def _metadata(model: str | None, finish_reason: str | None) -> dict[str, str]:
    metadata = {}
    if model:
        metadata["model"] = model
    if finish_reason:
        metadata["finish_reason"] = finish_reason
    return metadata


@contextmanager
def _translated() -> Iterator[None]:
    """The client's errors in chatstore's terms."""
    try:
        yield
    except openai.APITimeoutError as error:
        raise ResponderTimeout("the model did not answer in time") from error
    except openai.APIStatusError as error:
        raise ResponderError(f"the model answered HTTP {error.status_code}") from error
    except openai.APIError as error:
        raise ResponderError(f"the model failed: {type(error).__name__}") from error

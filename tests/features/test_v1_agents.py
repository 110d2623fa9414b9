"""The Agents SDK's own OpenAIConversationsSession on chatstore's /v1, over a
real ``chatstore serve`` on loopback: multi-turn agents (tool turns
included) keep their history in chatstore, through the official ``openai``
client, with the SDK's ScriptedModel standing in for a model (no network)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, OpenAIConversationsSession, Runner, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from openai import AsyncOpenAI
from support.serve import Server, running_server
from support.users import User

from chatstore.config import Settings


@pytest.fixture(scope="module")
def server(database: str, settings: Settings) -> Iterator[Server]:
    with running_server(database, settings.auth_secret) as served:
        yield served


@pytest.fixture
async def oai(server: Server, user: User) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=user.token) as client:
        yield client


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    # The SDK exports traces to OpenAI by default: not from a test.
    set_tracing_disabled(True)
    yield


@function_tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def texts(items: list[Any]) -> list[tuple[str, str]]:
    """(type, text or name) of each item, for comparing histories."""
    shown = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            content = item["content"]
            text = content if isinstance(content, str) else content[0]["text"]
            shown.append((f"{kind}:{item['role']}", text))
        elif kind == "function_call":
            shown.append((kind, f"{item['name']}{item['arguments']}"))
        elif kind == "function_call_output":
            shown.append((kind, str(item["output"])))
        else:
            shown.append((kind, ""))
    return shown


async def test_multi_turn_agent_with_a_tool_turn_keeps_its_history_in_chatstore(
    oai: AsyncOpenAI, server: Server, user: User
) -> None:
    conversation = await oai.conversations.create(metadata={"agent": "calculator"})
    model = ScriptedModel(
        [
            [function_call("multiply", {"a": 6, "b": 7}, call_id="call_1")],
            [assistant_message("6 x 7 = 42", item_id="msg_a")],
            [assistant_message("You asked about 6 x 7.", item_id="msg_b")],
        ]
    )
    agent = Agent(name="Calculator", model=model, tools=[multiply])
    session = OpenAIConversationsSession(conversation_id=conversation.id, openai_client=oai)

    first = await Runner.run(agent, "What is 6 x 7?", session=session)
    assert first.final_output == "6 x 7 = 42"
    second = await Runner.run(agent, "What did I ask?", session=session)
    assert second.final_output == "You asked about 6 x 7."
    model.assert_complete()

    expected = [
        ("message:user", "What is 6 x 7?"),
        ("function_call", 'multiply{"a":6,"b":7}'),
        ("function_call_output", "42"),
        ("message:assistant", "6 x 7 = 42"),
        ("message:user", "What did I ask?"),
        ("message:assistant", "You asked about 6 x 7."),
    ]
    # The second turn's model saw the first turn's history, read back from chatstore.
    last_call = model.last_call
    assert last_call is not None
    assert texts(list(last_call.input)) == expected[:5]
    assert texts(await session.get_items()) == expected
    assert texts(await session.get_items(limit=2)) == expected[-2:]

    # The same history through /api: the chat-completions view of it.
    async with httpx.AsyncClient(base_url=server.base_url, headers=user.headers) as api:
        conversation_uuid = uuid.UUID(hex=conversation.id.removeprefix("conv_"))
        listed = await api.get(f"/api/conversations/{conversation_uuid}/messages")
    assert listed.status_code == 200, listed.text
    roles = [(m["role"], m["content"]) for m in listed.json()["data"]]
    assert roles == [
        ("user", "What is 6 x 7?"),
        ("assistant", None),
        ("tool", "42"),
        ("assistant", "6 x 7 = 42"),
        ("user", "What did I ask?"),
        ("assistant", "You asked about 6 x 7."),
    ]


async def test_session_pop_and_clear(oai: AsyncOpenAI) -> None:
    session = OpenAIConversationsSession(openai_client=oai)  # starts its own conversation
    await session.add_items(
        [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ]
    )
    popped = await session.pop_item()
    assert popped is not None and texts([popped]) == [("message:user", "three")]
    assert texts(await session.get_items()) == [
        ("message:user", "one"),
        ("message:assistant", "two"),
    ]
    conversation_id = session.session_id
    await session.clear_session()  # the SDK's way: the conversation is deleted
    with pytest.raises(openai.NotFoundError):
        await oai.conversations.retrieve(conversation_id)


async def test_more_than_20_items_go_in_batches_of_20(oai: AsyncOpenAI) -> None:
    session = OpenAIConversationsSession(openai_client=oai)
    items: list[Any] = [{"role": "user", "content": f"n{n}"} for n in range(45)]
    await session.add_items(items)
    got = await session.get_items()
    assert [text for _kind, text in texts(got)] == [f"n{n}" for n in range(45)]

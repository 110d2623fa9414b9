"""chatstore.agents.ChatStoreSession: the OpenAI Agents SDK's Session over a
conversation (issue 12, item 2), on the suite's real database, run by the
SDK's own Runner with its own scripted model (agents.testing, no network)
and compared with the SDK's own SQLAlchemySession on the same script."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner, function_tool
from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from agents.items import TResponseInputItem
from agents.memory import Session, SessionSettings
from agents.testing import ScriptedModel, assistant_message, function_call
from openai.types.responses.response_reasoning_item import ResponseReasoningItem

from chatstore.agents import ChatStoreSession
from chatstore.errors import NotFound, ValidationError
from chatstore.store import ChatStore

README = Path(__file__).resolve().parents[2] / "README.md"


def user(text: str) -> TResponseInputItem:
    return {"role": "user", "content": text}


def text_of(item: Any) -> str:
    """An easy message's text."""
    content = item["content"]
    assert isinstance(content, str)
    return content


def canonical(items: list[Any]) -> list[str]:
    return [json.dumps(item, sort_keys=True) for item in items]


async def test_session_conforms_to_the_sdk_protocol(store: ChatStore, user_id: str) -> None:
    session = await ChatStoreSession.create(store, user_id, title="Agent")
    assert isinstance(session, Session)
    conversation = await store.get_conversation(user_id, session.session_id)
    assert session.session_id == str(conversation.id)
    assert conversation.title == "Agent"
    assert session.session_settings is None
    assert await session.get_items() == []
    assert await session.pop_item() is None


async def test_items_round_trip_in_order_and_pop_takes_the_newest(
    store: ChatStore, user_id: str
) -> None:
    session = await ChatStoreSession.create(store, user_id)
    items: list[TResponseInputItem] = [
        user("hi"),
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ]
    await session.add_items(items)
    await session.add_items([])
    assert await session.get_items() == items
    assert await session.get_items(limit=2) == items[2:]
    assert await session.pop_item() == items[-1]
    assert await session.get_items() == items[:-1]


async def test_an_existing_conversation_opens_by_id(store: ChatStore, user_id: str) -> None:
    conversation = await store.create_conversation(user_id)
    await store.append_message(user_id, conversation.id, {"role": "user", "content": "hello"})
    session = ChatStoreSession(conversation.id, store=store, user_id=user_id)
    assert session.session_id == str(conversation.id)
    assert await session.get_items() == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
    ]


async def test_another_users_conversation_raises_not_found(
    store: ChatStore, user_id: str, other_user_id: str
) -> None:
    mine = await ChatStoreSession.create(store, user_id)
    await mine.add_items([user("mine")])
    theirs = ChatStoreSession(mine.session_id, store=store, user_id=other_user_id)
    for attempt in (
        theirs.get_items(),
        theirs.get_items(limit=1),
        theirs.add_items([user("x")]),
        theirs.pop_item(),
        theirs.clear_session(),
    ):
        with pytest.raises(NotFound):
            await attempt
    with pytest.raises(NotFound):
        ChatStoreSession("not-a-uuid", store=store, user_id=user_id)
    assert await mine.get_items() == [user("mine")]


async def test_concurrent_writers_through_separate_sessions_lose_nothing(
    store: ChatStore, user_id: str
) -> None:
    first = await ChatStoreSession.create(store, user_id)
    writers = [ChatStoreSession(first.session_id, store=store, user_id=user_id) for _ in range(8)]

    async def write(writer: int) -> None:
        for batch in range(4):
            await writers[writer].add_items([user(f"{writer}.{batch}.{part}") for part in range(3)])

    await asyncio.gather(*(write(w) for w in range(len(writers))))
    texts = [text_of(item) for item in await first.get_items()]
    assert sorted(texts) == sorted(
        f"{w}.{b}.{p}" for w in range(len(writers)) for b in range(4) for p in range(3)
    )
    # Each add_items is one batch: its three items are consecutive.
    for start in range(0, len(texts), 3):
        prefixes = {text.rsplit(".", 1)[0] for text in texts[start : start + 3]}
        assert len(prefixes) == 1, texts[start : start + 3]


async def test_concurrent_pops_return_each_item_once(store: ChatStore, user_id: str) -> None:
    session = await ChatStoreSession.create(store, user_id)
    await session.add_items([user(str(n)) for n in range(30)])
    poppers = [
        ChatStoreSession(session.session_id, store=store, user_id=user_id) for _ in range(40)
    ]
    popped = await asyncio.gather(*(p.pop_item() for p in poppers))
    got = [text_of(item) for item in popped if item is not None]
    assert sorted(got, key=int) == [str(n) for n in range(30)]
    assert popped.count(None) == 10
    assert await session.get_items() == []


async def test_clear_session_removes_the_items_and_keeps_the_conversation(
    store: ChatStore, user_id: str
) -> None:
    session = await ChatStoreSession.create(store, user_id, title="kept")
    await session.add_items([user("a"), user("b")])
    await session.clear_session()
    assert await session.get_items() == []
    assert (await store.get_conversation(user_id, session.session_id)).title == "kept"
    await session.add_items([user("c")])
    assert await session.get_items() == [user("c")]


async def test_session_settings_limit_is_honoured(store: ChatStore, user_id: str) -> None:
    session = await ChatStoreSession.create(
        store, user_id, session_settings=SessionSettings(limit=3)
    )
    items = [user(str(n)) for n in range(5)]
    await session.add_items(items)
    assert await session.get_items() == items[-3:]
    assert await session.get_items(limit=1) == items[-1:]
    assert await session.get_items(limit=0) == []
    unlimited = ChatStoreSession(session.session_id, store=store, user_id=user_id)
    assert await unlimited.get_items() == items
    as_mapping = ChatStoreSession(
        session.session_id, store=store, user_id=user_id, session_settings={"limit": 2}
    )
    assert as_mapping.session_settings == SessionSettings(limit=2)
    assert await as_mapping.get_items() == items[-2:]


async def test_add_items_is_atomic_beyond_one_store_batch(store: ChatStore, user_id: str) -> None:
    session = await ChatStoreSession.create(store, user_id)
    bad: list[Any] = [user(str(n)) for n in range(150)] + [{"role": "robot", "content": "x"}]
    with pytest.raises(ValidationError):
        await session.add_items(bad)
    assert await session.get_items() == []
    await session.add_items(bad[:150])
    assert len(await session.get_items()) == 150


# -- under the SDK's Runner, compared with its own SQLAlchemySession ---------------


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}."


def scripted_model() -> ScriptedModel:
    """Two turns: a tool turn (reasoning, a call, its answer), then a reply."""
    reasoning = ResponseReasoningItem(
        id="rs_1", type="reasoning", summary=[], encrypted_content="gAAAA-encrypted"
    )
    return ScriptedModel(
        [
            [reasoning, function_call("get_weather", {"city": "Paris"}, call_id="call_1")],
            [assistant_message("It is sunny in Paris.")],
            [assistant_message("You asked about Paris.")],
        ]
    )


async def run_script(session: Session) -> tuple[list[str], ScriptedModel]:
    model = scripted_model()
    agent = Agent(name="Weather", instructions="Answer briefly.", model=model, tools=[get_weather])
    first = await Runner.run(agent, "What's the weather in Paris?", session=session)
    assert first.final_output == "It is sunny in Paris."
    second = await Runner.run(agent, "What did I ask about?", session=session)
    assert second.final_output == "You asked about Paris."
    model.assert_complete()
    return canonical(await session.get_items()), model


async def test_runner_multi_turn_with_a_tool_matches_the_sdks_sqlalchemy_session(
    store: ChatStore, user_id: str, tmp_path: Path
) -> None:
    ours = await ChatStoreSession.create(store, user_id)
    reference = SQLAlchemySession.from_url(
        "reference", url=f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}", create_tables=True
    )
    try:
        our_items, our_model = await run_script(ours)
        their_items, their_model = await run_script(reference)
    finally:
        await reference.engine.dispose()
    assert our_items == their_items
    # The model was shown the same history on every call.
    assert [canonical(list(c.input)) for c in our_model.calls] == [
        canonical(list(c.input)) for c in their_model.calls
    ]
    types = [json.loads(item).get("type", "easy message") for item in our_items]
    assert types == [
        "easy message",
        "reasoning",
        "function_call",
        "function_call_output",
        "message",
        "easy message",
        "message",
    ]
    # The chat-completions view of the same conversation.
    messages = (await store.list_messages(user_id, ours.session_id)).data
    assert [(m.role, m.content) for m in messages] == [
        ("user", "What's the weather in Paris?"),
        ("assistant", None),
        ("tool", "Sunny in Paris."),
        ("assistant", "It is sunny in Paris."),
        ("user", "What did I ask about?"),
        ("assistant", "You asked about Paris."),
    ]


async def session_script(session: Session) -> list[Any]:
    """Every operation of the protocol, and what each returned."""
    seen: list[Any] = []
    reasoning: TResponseInputItem = {
        "type": "reasoning",
        "id": "rs_9",
        "summary": [{"type": "summary_text", "text": "s"}],
        "encrypted_content": "enc",
    }
    call: TResponseInputItem = {
        "type": "function_call",
        "id": "fc_9",
        "call_id": "call_9",
        "name": "f",
        "arguments": '{"x": 1}',
    }
    output: TResponseInputItem = {
        "type": "function_call_output",
        "call_id": "call_9",
        "output": "1",
    }
    await session.add_items([user("one"), reasoning, call, output])
    seen.append(await session.get_items())
    seen.append(await session.get_items(limit=3))
    seen.append(await session.pop_item())
    seen.append(await session.pop_item())
    await session.add_items([user("two")])
    seen.append(await session.get_items())
    await session.clear_session()
    seen.append(await session.get_items())
    seen.append(await session.pop_item())
    await session.add_items([user("three")])
    seen.append(await session.get_items())
    return seen


async def test_the_protocols_operations_return_what_the_sdks_sqlalchemy_session_does(
    store: ChatStore, user_id: str, tmp_path: Path
) -> None:
    ours = await ChatStoreSession.create(store, user_id)
    reference = SQLAlchemySession.from_url(
        "reference", url=f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}", create_tables=True
    )
    try:
        expected = await session_script(reference)
    finally:
        await reference.engine.dispose()
    assert await session_script(ours) == expected


def test_chatstore_imports_without_the_agents_sdk() -> None:
    script = """
import sys
sys.modules["agents"] = None
import chatstore, chatstore.store, chatstore.http.app
try:
    import chatstore.agents
except ImportError as error:
    assert "chatstore[agents]" in str(error), error
else:
    raise AssertionError("chatstore.agents loaded without the Agents SDK")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_readme_agents_example_runs_as_pasted(database: str) -> None:
    found = re.search(r"<<'AGENTS'\n(.*?)\nAGENTS\n", README.read_text(), re.S)
    assert found is not None, "README.md has no Agents SDK heredoc example"
    done = subprocess.run(
        [sys.executable, "-"],
        input=found.group(1),
        capture_output=True,
        text=True,
        env={**os.environ, "CHATSTORE_DATABASE_URL": database},
        cwd=README.parent,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "It is sunny in Paris.",
        "You asked about Paris.",
        "user: What's the weather in Paris?",
        "assistant: None",
        "tool: Sunny in Paris.",
        "assistant: It is sunny in Paris.",
        "user: What did I ask about?",
        "assistant: You asked about Paris.",
    ]

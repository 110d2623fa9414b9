"""chatstore.langchain: a conversation as LangChain's chat message history
(issue 12, item 4), over the suite's real database, with langchain-core's own
fake chat model (no network)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from chatstore import NotFound, ValidationError
from chatstore.langchain import ChatStoreMessageHistory
from chatstore.store import ChatStore

README = Path(__file__).resolve().parents[2] / "README.md"


async def history_of(store: ChatStore, user_id: str) -> ChatStoreMessageHistory:
    conversation = await store.create_conversation(user_id)
    return ChatStoreMessageHistory(store, user_id, conversation.id)


def tool_turn() -> list[BaseMessage]:
    return [
        SystemMessage(content="Be terse."),
        SystemMessage(content="Use tools.", additional_kwargs={"__openai_role__": "developer"}),
        HumanMessage(content="What is 6 x 7?", name="ada"),
        AIMessage(
            content="",
            tool_calls=[
                {"name": "multiply", "args": {"a": 6, "b": 7}, "id": "call_1", "type": "tool_call"}
            ],
        ),
        ToolMessage(content="42", tool_call_id="call_1", name="multiply"),
        AIMessage(content="6 x 7 = 42", name="bot"),
    ]


async def test_messages_round_trip_losslessly_through_chatstore(
    store: ChatStore, user_id: str
) -> None:
    history = await history_of(store, user_id)
    sent = tool_turn()
    await history.aadd_messages(sent)
    assert await history.aget_messages() == sent
    stored = (await store.list_messages(user_id, history.conversation_id)).data
    assert [m.role for m in stored] == [
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    call = stored[3]
    assert call.content is None
    assert call.tool_calls is not None
    assert call.tool_calls[0].function.arguments == '{"a": 6, "b": 7}'
    assert (stored[2].name, stored[4].tool_call_id) == ("ada", "call_1")


async def test_tool_call_arguments_that_are_not_a_json_object_come_back_as_invalid_tool_calls(
    store: ChatStore, user_id: str
) -> None:
    history = await history_of(store, user_id)
    raw = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}
    await store.append_messages(
        user_id, history.conversation_id, [{"role": "assistant", "tool_calls": [raw]}]
    )
    (message,) = await history.aget_messages()
    assert isinstance(message, AIMessage) and message.tool_calls == []
    assert message.invalid_tool_calls[0]["args"] == "[1"
    # ... and are stored back as they were.
    await history.aclear()
    await history.aadd_messages([message])
    (stored,) = (await store.list_messages(user_id, history.conversation_id)).data
    assert stored.tool_calls is not None and stored.tool_calls[0].function.arguments == "[1"


async def test_aclear_removes_the_messages_and_keeps_the_conversation(
    store: ChatStore, user_id: str
) -> None:
    history = await history_of(store, user_id)
    await history.aadd_messages(tool_turn())
    await history.aclear()
    assert await history.aget_messages() == []
    await store.get_conversation(user_id, history.conversation_id)
    await history.aadd_messages([HumanMessage(content="again")])
    assert await history.aget_messages() == [HumanMessage(content="again")]


async def test_another_users_conversation_raises_not_found(
    store: ChatStore, user_id: str, other_user_id: str
) -> None:
    mine = await history_of(store, user_id)
    await mine.aadd_messages([HumanMessage(content="private")])
    theirs = ChatStoreMessageHistory(store, other_user_id, mine.conversation_id)
    with pytest.raises(NotFound):
        await theirs.aget_messages()
    with pytest.raises(NotFound):
        await theirs.aadd_messages([HumanMessage(content="hi")])
    with pytest.raises(NotFound):
        await theirs.aclear()
    assert await mine.aget_messages() == [HumanMessage(content="private")]


async def test_aadd_messages_is_atomic_one_batch(store: ChatStore, user_id: str) -> None:
    history = await history_of(store, user_id)
    # The tool message answers no tool call: the store refuses the batch,
    # so the valid message before it is not stored either.
    with pytest.raises(ValidationError):
        await history.aadd_messages(
            [HumanMessage(content="kept?"), ToolMessage(content="42", tool_call_id="nope")]
        )
    assert await history.aget_messages() == []


async def test_content_blocks_are_refused_clearly(store: ChatStore, user_id: str) -> None:
    history = await history_of(store, user_id)
    with pytest.raises(ValidationError, match="text content only"):
        await history.aadd_messages([HumanMessage(content=[{"type": "text", "text": "hi"}])])


async def test_a_sync_call_on_the_running_event_loop_raises_instead_of_deadlocking(
    store: ChatStore, user_id: str
) -> None:
    history = await history_of(store, user_id)
    with pytest.raises(RuntimeError, match="await aget_messages"):
        _ = history.messages
    with pytest.raises(RuntimeError, match="running event loop"):
        history.add_messages([HumanMessage(content="hi")])
    with pytest.raises(RuntimeError, match="running event loop"):
        history.clear()


async def test_sync_methods_work_from_another_thread_on_the_stores_loop(
    store: ChatStore, user_id: str
) -> None:
    history = await history_of(store, user_id)
    await history.aget_messages()  # binds the history to this loop
    await asyncio.to_thread(history.add_user_message, "from a thread")
    await asyncio.to_thread(history.add_ai_message, "hello")
    got = await asyncio.to_thread(lambda: history.messages)
    assert got == [HumanMessage(content="from a thread"), AIMessage(content="hello")]
    await asyncio.to_thread(history.clear)
    assert await history.aget_messages() == []


def test_a_sync_call_with_no_loop_for_the_store_raises(store: ChatStore) -> None:
    history = ChatStoreMessageHistory(store, "someone", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(RuntimeError, match="event loop running in another thread"):
        _ = history.messages


# langchain-core 1.x deprecates RunnableWithMessageHistory (for LangGraph's
# persistence) but still ships it; the issue asks for it to work.
@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
async def test_runnable_with_message_history_keeps_the_turns_across_ainvoke(
    store: ChatStore, user_id: str
) -> None:
    conversation = await store.create_conversation(user_id)
    seen: list[list[BaseMessage]] = []

    def capture(prompt: PromptValue) -> PromptValue:
        seen.append(prompt.to_messages())
        return prompt

    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be terse."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    model = FakeListChatModel(responses=["Hello Ada.", "You are Ada."])
    chain = RunnableWithMessageHistory(
        prompt | RunnableLambda(capture) | model,
        lambda session_id: ChatStoreMessageHistory(store, user_id, session_id),
        input_messages_key="question",
        history_messages_key="history",
    )
    config: Any = {"configurable": {"session_id": str(conversation.id)}}
    first = await chain.ainvoke({"question": "I am Ada."}, config=config)
    second = await chain.ainvoke({"question": "Who am I?"}, config=config)
    assert (first.content, second.content) == ("Hello Ada.", "You are Ada.")
    # The second turn's prompt carried the first turn, read back from the store.
    assert [m.content for m in seen[1]] == ["Be terse.", "I am Ada.", "Hello Ada.", "Who am I?"]
    stored = (await store.list_messages(user_id, conversation.id)).data
    assert [(m.role, m.content) for m in stored] == [
        ("user", "I am Ada."),
        ("assistant", "Hello Ada."),
        ("user", "Who am I?"),
        ("assistant", "You are Ada."),
    ]


def test_chatstore_imports_without_langchain_core() -> None:
    script = """
import sys
sys.modules["langchain_core"] = None
import chatstore, chatstore.store, chatstore.http.app
try:
    import chatstore.langchain
except ImportError as error:
    assert "chatstore[langchain]" in str(error), error
else:
    raise AssertionError("chatstore.langchain loaded without langchain-core")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_readme_langchain_example_runs_as_pasted(database: str) -> None:
    found = re.search(r"<<'LANGCHAIN'\n(.*?)\nLANGCHAIN\n", README.read_text(), re.S)
    assert found is not None, "README.md has no LangChain heredoc example"
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
        "Hello Ada.",
        "You are Ada.",
        "human: I am Ada.",
        "ai: Hello Ada.",
        "human: Who am I?",
        "ai: You are Ada.",
    ]

"""Responders without a database: the optional openai extra, the settings
of the chat flow, echo's stream and the character budget."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid

import pytest

from chatstore.chat import within_budget
from chatstore.config import Settings
from chatstore.models import Message, MessageInput
from chatstore.responder import EchoResponder, stream_reply


def test_chatstore_imports_and_serves_echo_without_the_openai_package() -> None:
    # openai made unimportable: chatstore, its app and echo still load; asking
    # for the openai responder says which extra to install.
    script = """
import sys
sys.modules["openai"] = None
import chatstore, chatstore.http.app
from chatstore.responder import EchoResponder, load_responder
assert isinstance(load_responder("echo"), EchoResponder)
try:
    load_responder("openai")
except ImportError as error:
    assert "chatstore[openai]" in str(error), error
else:
    raise AssertionError("the openai responder loaded without openai")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_the_responder_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CHATSTORE_RESPONDER": "openai",
            "CHATSTORE_RESPONDER_TIMEOUT_SECONDS": "2.5",
            "CHATSTORE_RESPONDER_HISTORY_MESSAGES": "20",
            "CHATSTORE_RESPONDER_HISTORY_CHARS": "0",
            "CHATSTORE_SYSTEM_PROMPT": "Be kind.",
            "CHATSTORE_OPENAI_BASE_URL": "http://localhost:11434/v1",
            "CHATSTORE_OPENAI_API_KEY": "sk-x",
            "CHATSTORE_OPENAI_MODEL": "llama3.2",
        }
    )
    assert (settings.responder, settings.responder_timeout_seconds) == ("openai", 2.5)
    assert (settings.responder_history_messages, settings.responder_history_chars) == (20, 0)
    assert settings.system_prompt == "Be kind."
    assert settings.openai_base_url == "http://localhost:11434/v1"
    assert (settings.openai_api_key, settings.openai_model) == ("sk-x", "llama3.2")
    defaults = Settings.from_env({})
    assert (defaults.responder_timeout_seconds, defaults.responder_history_messages) == (120, 50)
    assert defaults.openai_model is None and defaults.system_prompt is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATSTORE_RESPONDER_TIMEOUT_SECONDS", "soon"),
        ("CHATSTORE_RESPONDER_TIMEOUT_SECONDS", "0"),
        ("CHATSTORE_RESPONDER_TIMEOUT_SECONDS", "nan"),
        ("CHATSTORE_RESPONDER_HISTORY_MESSAGES", "0"),
        ("CHATSTORE_RESPONDER_HISTORY_MESSAGES", "1001"),
        ("CHATSTORE_RESPONDER_HISTORY_CHARS", "-1"),
    ],
)
def test_a_bad_responder_setting_is_refused_at_start_up(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize("content", ["Hello there", "  two  spaces ", "one", "a\nb\tc"])
async def test_echo_streams_word_by_word_and_the_words_join_back_exactly(content: str) -> None:
    message = MessageInput(role="user", content=content)
    chunks = [chunk.text async for chunk in stream_reply(EchoResponder(), [], message)]
    assert "".join(chunks) == content
    assert len(chunks) == len(content.split()) + (content[0].isspace())


def stored(seq: int, role: str, content: str | None, **fields: object) -> Message:
    return Message.model_validate(
        {
            "conversation_id": uuid.uuid4(),
            "seq": seq,
            "role": role,
            "content": content,
            "name": None,
            "tool_calls": None,
            "tool_call_id": None,
            "metadata": {},
            "created_at": dt.datetime.now(dt.UTC),
            **fields,
        }
    )


def test_the_character_budget_keeps_the_newest_and_always_the_new_message() -> None:
    history = [stored(1, "user", "aaaa"), stored(2, "assistant", "bb"), stored(3, "user", "c")]
    assert [m.seq for m in within_budget(history, 0, used=10**6)] == [1, 2, 3]
    assert [m.seq for m in within_budget(history, 7, used=0)] == [1, 2, 3]
    assert [m.seq for m in within_budget(history, 6, used=0)] == [2, 3]
    assert [m.seq for m in within_budget(history, 6, used=3)] == [2, 3]
    assert [m.seq for m in within_budget(history, 6, used=4)] == [3]
    # A new message over the budget on its own: no history (it is sent anyway).
    assert within_budget(history, 6, used=7) == []

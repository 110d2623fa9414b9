"""The chat page in a real browser: Debian's Chromium driven by Playwright,
against the real app served by uvicorn on loopback over the suite's
database. One browser for the module; a fresh context (own storage, so own
session) for each test.

Chromium is required: without /usr/bin/chromium these tests FAIL (CI
installs it through scripts/bootstrap). On a machine without apt, set
CHATSTORE_SKIP_BROWSER_TESTS=1 to skip them explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    async_playwright,
    expect,
)
from support.users import User

from chatstore.cli import sign_in_link
from chatstore.config import Settings
from chatstore.embedded import free_port
from chatstore.http.app import create_app
from chatstore.models import Message, MessageInput
from chatstore.responder import ReplyChunk, Responder
from chatstore.store import ChatStore

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SKIP_ENV = "CHATSTORE_SKIP_BROWSER_TESTS"
# Runs before the page's own scripts (Playwright injects it past the CSP).
VIOLATIONS_RECORDER = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`CSP refused ${event.violatedDirective}: ${event.blockedURI}`);
});
"""
# Bounded waits, generous for a loaded machine: never a timing assertion.
expect.set_options(timeout=20_000)


# -- fixtures -------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    database: str, settings: Settings, port: int, responder: Responder | None = None
) -> Iterator[str]:
    """The real app under uvicorn on a loopback port, in a thread with its own
    event loop (the page's requests must not wait on the test's loop)."""
    app = create_app(dataclasses.replace(settings, database_url=database), responder=responder)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, name="page-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def server(database: str, settings: Settings) -> Iterator[str]:
    with serving(database, settings, free_port()) as url:
        yield url


def chromium_present() -> bool:
    return CHROMIUM.exists()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: browser tests skipped on purpose")
    if not chromium_present():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/bootstrap as root (apt-get install chromium), "
            f"or set {SKIP_ENV}=1 on a machine without apt"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile. Every test also checks that the page threw no
    uncaught error and that the Content-Security-Policy refused nothing (the
    page must work within its own policy)."""
    opened = await browser.new_context(viewport={"width": 1200, "height": 800})
    problems: list[str] = []
    opened.on("weberror", lambda error: problems.append(f"uncaught: {error.error}"))
    await opened.add_init_script(VIOLATIONS_RECORDER)
    yield opened
    for page in opened.pages:
        problems += await page.evaluate("window.cspViolations || []")
    await opened.close()
    assert problems == []


async def signed_in(context: BrowserContext, server: str, user: User, fragment: str = "") -> Page:
    page = await context.new_page()
    await page.goto(sign_in_link(server, user.token))
    await expect(page.locator("#signout")).to_be_visible()
    await expect(page.locator("#conversations")).to_have_attribute("aria-busy", "false")
    if fragment:
        await page.goto(f"{server}/{fragment}")
    return page


async def conversation(store: ChatStore, user: User, title: str, contents: list[str]) -> str:
    created = await store.create_conversation(user.user_id, title=title)
    for start in range(0, len(contents), 100):
        await store.append_messages(
            user.user_id,
            created.id,
            [
                {"role": "user" if i % 2 == 0 else "assistant", "content": text}
                for i, text in enumerate(contents[start : start + 100], start)
            ],
        )
    return str(created.id)


async def send(page: Page, text: str) -> None:
    await page.locator("#input").fill(text)
    await page.locator("#input").press("Enter")


# -- sign-in ----------------------------------------------------------------------------------


async def test_the_token_open_link_signs_the_browser_in_and_leaves_the_address_bar(
    context: BrowserContext, server: str, database: str
) -> None:
    email = f"{secrets.token_hex(6)}@example.test"
    env = {**os.environ, "CHATSTORE_DATABASE_URL": database, "DISPLAY": ""}
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatstore",
        "token",
        "--open",
        "--email",
        email,
        "--url",
        server,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(command.communicate(), 60)
    assert command.returncode == 0, err
    link = out.decode().strip()
    assert re.fullmatch(rf"{re.escape(server)}/#token=[A-Za-z0-9%._-]+", link), link
    page = await context.new_page()
    await page.goto(link)
    await expect(page.locator("#conversations-more")).to_have_text("No conversations yet.")
    assert page.url == f"{server}/", "the token must leave the address bar"
    assert await page.evaluate("localStorage.getItem('chatstore.token')") is not None
    await expect(page.locator("#signin")).to_be_hidden()


async def test_without_a_session_the_page_says_how_to_get_one(
    context: BrowserContext, server: str
) -> None:
    page = await context.new_page()
    await page.goto(f"{server}/")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#signin")).to_contain_text("chatstore token --open")
    await expect(page.locator("#composer")).to_be_hidden()


async def test_an_expired_session_shows_the_sign_in_help(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    page = await signed_in(context, server, user)
    await store.pool.execute(
        """UPDATE "session" SET "expiresAt" = now() - interval '1 second' WHERE token = $1""",
        user.token,
    )
    # The server forgets the session when the expiry's notification reaches
    # it (milliseconds): reload once it answers 401, not a moment before.
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        async with asyncio.timeout(10):
            while True:
                response = await client.get("/api/conversations", headers=user.headers)
                if response.status_code == 401:
                    break
                await asyncio.sleep(0.05)
    await page.reload()
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#signin-reason")).to_contain_text("expired")


# -- conversations ----------------------------------------------------------------------------


async def test_a_new_conversation_shows_the_reply_and_its_history_after_a_reload(
    context: BrowserContext, server: str, user: User
) -> None:
    page = await signed_in(context, server, user)
    await page.locator("#new-chat").click()
    await page.locator("#input").fill("first line")
    await page.locator("#input").press("Shift+Enter")  # a newline, not a send
    await page.locator("#input").press_sequentially("second line")
    await expect(page.locator("#messages li")).to_have_count(0)
    await page.locator("#input").press("Enter")
    messages = page.locator("#messages li.message:not(.pending)")
    await expect(messages).to_have_count(2)  # the user's message and the (echo) reply
    await expect(messages.nth(1)).to_have_class(re.compile("assistant"))
    await expect(messages.nth(1).locator(".content")).to_have_text("first line\nsecond line")
    await expect(page.locator("#conversations li")).to_have_count(1)
    await expect(page.locator("#title")).to_have_text("first line")

    await page.reload()
    await expect(page.locator("#messages li.message")).to_have_count(2)
    await expect(page.locator("#messages li.message").first).to_contain_text("second line")


async def test_switching_conversations_shows_each_ones_messages(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    await conversation(store, user, "apples", ["apple pie", "baked"])
    await conversation(store, user, "pears", ["pear tart", "poached", "served"])
    page = await signed_in(context, server, user)
    links = page.locator("#conversations .conversation-link")
    await expect(links).to_have_count(2)
    await expect(links.first).to_contain_text("pears")  # newest activity first
    await links.nth(1).click()
    await expect(page.locator("#title")).to_have_text("apples")
    await expect(page.locator("#messages li")).to_have_count(2)
    await links.first.click()
    await expect(page.locator("#title")).to_have_text("pears")
    await expect(page.locator("#messages li")).to_have_count(3)
    await expect(links.first).to_have_attribute("aria-current", "page")


async def test_scrolling_up_loads_older_pages_without_a_jump(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    cid = await conversation(store, user, "long", [f"message {n}" for n in range(1, 501)])
    page = await signed_in(context, server, user, f"#c={cid}")
    items = page.locator("#messages li.message")
    await expect(items).to_have_count(50)
    await expect(items.last).to_contain_text("message 500")
    for loaded in range(100, 501, 50):
        oldest = items.first
        seq = await oldest.get_attribute("data-seq")
        await page.locator("#history").evaluate("history => { history.scrollTop = 0; }")
        top_before = await page.evaluate(_top_of, seq)
        await expect(items).to_have_count(loaded)
        # The message that was at the top is still exactly where it was.
        assert abs(await page.evaluate(_top_of, seq) - top_before) < 2, loaded
    await expect(items.first).to_contain_text("message 1")


_top_of = "seq => document.getElementById('m-' + seq).getBoundingClientRect().top"


async def test_the_sidebar_loads_more_conversations_as_it_scrolls(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    for n in range(35):  # one page is 30
        await store.create_conversation(user.user_id, title=f"conversation {n}")
    page = await signed_in(context, server, user)
    items = page.locator("#conversations li")
    await expect(items).to_have_count(30)
    await expect(items.first).to_contain_text("conversation 34")  # newest first
    await page.locator("#conversations-more").scroll_into_view_if_needed()
    await expect(items).to_have_count(35)
    await expect(items.last).to_contain_text("conversation 0")


# -- search -----------------------------------------------------------------------------------


async def test_a_search_hit_opens_its_conversation_at_that_message(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    words = [f"filler {n}" for n in range(1, 301)]
    words[40] = "the zebra <b>crossing</b>"  # seq 41: far above the newest page
    await conversation(store, user, "animals", words)
    await conversation(store, user, "other", ["nothing here"])
    page = await signed_in(context, server, user)
    await page.locator("#search").fill("zebra")
    hits = page.locator("#hits a")
    await expect(hits).to_have_count(1)
    await expect(hits.locator("mark")).to_have_text("zebra")
    # The snippet is text with <mark>s: the message's own markup stays text,
    # and so does every space around a match.
    await expect(hits.locator(".snippet")).to_contain_text("zebra <b>crossing")
    await hits.first.click()
    await expect(page.locator("#title")).to_have_text("animals")
    found = page.locator("#m-41")
    await expect(found).to_have_class(re.compile("found"))
    await expect(found).to_be_in_viewport()
    await expect(found.locator(".content")).to_have_text("the zebra <b>crossing</b>")


# -- live -------------------------------------------------------------------------------------


async def test_a_message_sent_in_a_second_tab_appears_live_in_the_first(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    cid = await conversation(store, user, "shared", ["hello"])
    first = await signed_in(context, server, user, f"#c={cid}")
    await expect(first.locator("#messages li")).to_have_count(1)
    second = await context.new_page()  # same browser: already signed in
    await second.goto(f"{server}/#c={cid}")
    await expect(second.locator("#messages li")).to_have_count(1)
    await send(second, "from the other tab")
    await expect(second.locator("#messages li.message:not(.pending)")).to_have_count(3)
    live = first.locator("#messages li.message")
    await expect(live).to_have_count(3)  # each once: deduplicated by seq
    await expect(live.nth(1)).to_contain_text("from the other tab")
    await expect(first.locator("#announce")).to_contain_text("from the other tab")


async def test_after_a_server_restart_the_page_resumes_and_misses_nothing(
    context: BrowserContext, database: str, settings: Settings, user: User, store: ChatStore
) -> None:
    cid = await conversation(store, user, "resumed", ["one"])
    page = await context.new_page()
    resumes: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            resumes.append(r.headers.get("last-event-id")) if r.url.endswith("/events") else None
        ),
    )
    port = free_port()
    with serving(database, settings, port) as url:
        await page.goto(sign_in_link(url, user.token) + f"&c={cid}")
        await expect(page.locator("#messages li")).to_have_count(1)
    # The server is gone (its streams cut): a message arrives meanwhile.
    await store.append_message(user.user_id, cid, {"role": "user", "content": "two"})
    with serving(database, settings, port):
        # The reconnection sends Last-Event-ID: 1 and is replayed seq 2.
        live = page.locator("#messages li")
        await expect(live).to_have_count(2)
        await expect(live.nth(1)).to_contain_text("two")
    assert len(resumes) >= 2 and set(resumes) == {"1"}, resumes


# -- the streaming chat, against the real server -----------------------------------------------
#
# The page asks for text/event-stream; these tests drive the real server with
# a responder the test controls (it runs on the server thread's own loop).


class GatedResponder:
    """Streams its first words, then waits for the test before the last (a
    threading.Event: the server runs on another thread and loop)."""

    def __init__(self) -> None:
        self.go = threading.Event()

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        raise NotImplementedError  # pragma: no cover - the turn streams

    async def stream(
        self, history: Sequence[Message], message: MessageInput
    ) -> AsyncIterator[ReplyChunk]:
        yield ReplyChunk("Once ")
        await asyncio.to_thread(self.go.wait, 60)
        yield ReplyChunk("upon")


class FailsOnceResponder:
    """Fails the first time it is asked each message (after the server has
    stored it), then echoes."""

    def __init__(self) -> None:
        self.asked: set[str | None] = set()

    async def respond(self, history: Sequence[Message], message: MessageInput) -> MessageInput:
        if message.content not in self.asked:
            self.asked.add(message.content)
            raise RuntimeError("the model is down")
        return MessageInput(role="assistant", content=f"you said {message.content}")


async def contents(store: ChatStore, cid: str) -> list[str | None]:
    rows = await store.pool.fetch(
        "SELECT content FROM messages WHERE conversation_id = $1 ORDER BY seq", cid
    )
    return [row["content"] for row in rows]


async def test_a_streamed_reply_is_written_from_its_deltas_then_stored_once(
    context: BrowserContext, database: str, settings: Settings, user: User, store: ChatStore
) -> None:
    gated = GatedResponder()
    with serving(database, settings, free_port(), responder=gated) as server:
        try:
            cid = await conversation(store, user, "streamed", ["hello", "hi"])
            page = await signed_in(context, server, user, f"#c={cid}")
            await expect(page.locator("#messages li")).to_have_count(2)
            await send(page, "tell me")
            # The first delta is written while the model is still at work.
            draft = page.locator("#messages li.streaming")
            await expect(draft.locator(".content")).to_have_text(re.compile(r"^Once\s*$"))
            await expect(page.locator("#messages li")).to_have_count(4)
            await expect(page.locator("#messages li").nth(2)).to_contain_text("tell me")
        finally:
            gated.go.set()
        messages = page.locator("#messages li")
        await expect(messages.nth(3).locator(".content")).to_have_text("Once upon")
        await expect(messages).to_have_count(4)
        await expect(messages.nth(3)).to_have_class(re.compile("assistant"))
        await expect(page.locator("#messages .pending, #messages .streaming")).to_have_count(0)
    assert await contents(store, cid) == ["hello", "hi", "tell me", "Once upon"]


async def test_sending_again_after_a_failed_reply_reuses_its_key_and_stores_the_message_once(
    context: BrowserContext, database: str, settings: Settings, user: User, store: ChatStore
) -> None:
    with serving(database, settings, free_port(), responder=FailsOnceResponder()) as server:
        cid = await conversation(store, user, "broken", ["hello"])
        page = await signed_in(context, server, user, f"#c={cid}")
        await send(page, "try this")
        await expect(page.locator("#error")).to_contain_text("responder_error")
        await expect(page.locator("#error")).to_contain_text("the user's message is stored")
        await expect(page.locator("#input")).to_have_value("try this")  # nothing typed is lost
        # The stored user message is shown, no half reply.
        await expect(page.locator("#messages li")).to_have_count(2)
        await page.locator("#input").press("Enter")
        messages = page.locator("#messages li")
        await expect(messages).to_have_count(3)
        await expect(messages.nth(2)).to_contain_text("you said try this")
        await expect(page.locator("#error")).to_be_hidden()
    assert await contents(store, cid) == ["hello", "try this", "you said try this"]


async def settled(page: Page, count: int) -> None:
    """``count`` messages shown and the turn over: no user message still
    pending and no reply still streaming. A reply's first delta already makes
    an item (a draft, not yet stored), so a count alone can be reached while
    the model is mid-reply, before the server has stored the answer."""
    # Stored items only: an assistant's is placed (and its draft removed in
    # the same task) once the server sent it, which is after it stored it.
    shown = page.locator("#messages li:not(.pending):not(.streaming)")
    await expect(shown).to_have_count(count)
    await expect(page.locator("#messages .pending, #messages .streaming")).to_have_count(0)
    await expect(page.locator("#messages li")).to_have_count(count)


async def lose_the_first_answer(page: Page, url: str) -> list[str | None]:
    """The first request to ``url`` reaches the server, which does the work,
    but its answer is lost (the connection drops); the next go through.
    Returns the Idempotency-Key of each request."""
    keys: list[str | None] = []

    async def handle(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            await route.fetch()
            await route.abort()
        else:
            await route.continue_()

    await page.route(url, handle)
    return keys


async def test_a_start_whose_answer_was_lost_is_sent_again_with_its_key_making_one_conversation(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    page = await signed_in(context, server, user)
    keys = await lose_the_first_answer(page, "**/api/chat/start")
    await send(page, "hello there")
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#input")).to_have_value("hello there")
    await page.locator("#input").press("Enter")
    await settled(page, 2)
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1], keys
    (only,) = (await store.list_conversations(user.user_id)).data
    assert await contents(store, str(only.id)) == ["hello there", "hello there"]


async def test_a_message_whose_answer_was_lost_is_sent_again_with_its_key_and_stored_once(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    cid = await conversation(store, user, "dropped", ["hello"])
    page = await signed_in(context, server, user, f"#c={cid}")
    keys = await lose_the_first_answer(page, "**/api/chat/*/message")
    await send(page, "once only")
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#input")).to_have_value("once only")
    await page.locator("#input").press("Enter")
    await settled(page, 3)
    await expect(page.locator("#error")).to_be_hidden()
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1], keys
    assert await contents(store, cid) == ["hello", "once only", "once only"]


# -- the rest of the page ---------------------------------------------------------------------


async def test_rename_and_delete_from_the_sidebar(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    await conversation(store, user, "old name", ["x"])
    page = await signed_in(context, server, user)
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    item = page.locator("#conversations li").first
    await item.locator("summary").click()
    await item.get_by_role("button", name="Rename").click()
    await item.get_by_label("New title").fill("new name")
    await item.get_by_label("New title").press("Enter")
    await expect(page.locator("#conversations li").first).to_contain_text("new name")
    renamed = await store.list_conversations(user.user_id, limit=10)
    assert [c.title for c in renamed.data] == ["new name"]
    item = page.locator("#conversations li").first
    await item.locator("summary").click()
    await item.get_by_role("button", name="Delete").click()
    await expect(page.locator("#conversations li")).to_have_count(0)
    assert (await store.list_conversations(user.user_id, limit=10)).data == []


async def test_archive_and_unarchive_from_the_sidebar_and_see_the_archived_list(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    await conversation(store, user, "kept", ["x"])
    put_away = await conversation(store, user, "put away", ["y"])
    page = await signed_in(context, server, user)
    items = page.locator("#conversations li")
    await expect(items).to_have_count(2)
    item = items.filter(has_text="put away")
    await item.locator("summary").click()
    await item.get_by_role("button", name="Archive").click()
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("kept")
    assert (await store.get_conversation(user.user_id, put_away)).archived is True

    # A reload lists it no more; the switch shows the archived ones only.
    await page.reload()
    await expect(items).to_have_count(1)
    toggle = page.get_by_role("button", name="Archived conversations")
    await toggle.click()
    await expect(page.locator("#archived-toggle")).to_have_attribute("aria-pressed", "true")
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("put away")
    await items.first.locator("summary").click()
    await items.first.get_by_role("button", name="Unarchive").click()
    await expect(items).to_have_count(0)
    await expect(page.locator("#conversations-more")).to_have_text("No archived conversations.")
    assert (await store.get_conversation(user.user_id, put_away)).archived is False

    await page.get_by_role("button", name="Back to conversations").click()
    await expect(items).to_have_count(2)


async def test_tool_calls_and_results_are_folded(
    context: BrowserContext, server: str, user: User, store: ChatStore
) -> None:
    created = await store.create_conversation(user.user_id, title="tools")
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    batch: list[dict[str, Any]] = [
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "lookup"},
    ]
    await store.append_messages(user.user_id, created.id, batch)
    page = await signed_in(context, server, user, f"#c={created.id}")
    folds = page.locator("#messages details.fold")
    await expect(folds).to_have_count(2)
    await expect(folds.first.locator("summary")).to_have_text("Tool call: lookup")
    await expect(folds.nth(1).locator("pre")).to_be_hidden()  # folded until opened
    await folds.nth(1).locator("summary").click()
    await expect(folds.nth(1).locator("pre")).to_have_text("42")


async def test_an_api_error_shows_the_contracts_message(
    context: BrowserContext, server: str, user: User
) -> None:
    page = await signed_in(context, server, user, "#c=00000000-0000-0000-0000-000000000000")
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#error")).to_contain_text("not_found: conversation not found")


async def test_at_phone_width_the_sidebar_collapses_behind_the_menu(
    browser: Browser, server: str, user: User, store: ChatStore
) -> None:
    cid = await conversation(
        store,
        user,
        "a title long enough to need more than the width of a phone screen to show",
        ["What's the weather going to be in Lisbon this weekend?", "Sunny on Saturday. " * 8],
    )
    phone = await browser.new_context(viewport={"width": 390, "height": 800})
    try:
        page = await signed_in(phone, server, user, f"#c={cid}")
        await expect(page.locator("#messages li")).to_have_count(2)
        await expect(page.locator("#new-chat")).not_to_be_in_viewport()
        await expect(page.locator("#signout")).to_be_in_viewport()
        wide = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert await page.evaluate(wide) <= 0, "the page is wider than the phone"
        await page.locator("#menu").click()
        await expect(page.locator("#menu")).to_have_attribute("aria-expanded", "true")
        await expect(page.locator("#new-chat")).to_be_in_viewport()
    finally:
        await phone.close()


async def test_the_docs_page_renders_every_operation_locally(
    context: BrowserContext, server: str
) -> None:
    page = await context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
    await page.goto(f"{server}/docs")
    await expect(page.locator("#listMessages")).to_contain_text("List a conversation's messages")
    await expect(page.locator("#schema-Message")).to_be_visible()
    assert outside == []

"""GET /api/search: the caller's own messages, web-search syntax, best first.

The last test seeds a million messages over a thousand users in a database
of its own and reads the plan: one user's search is served by
messages_search_idx and touches a tiny part of the table.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
import pytest
from support.contract import assert_error, assert_status
from support.databases import create_database
from support.users import User

from chatstore import migrations
from chatstore.models import Conversation
from chatstore.store import ChatStore

HIT_KEYS = {"conversation_id", "seq", "role", "snippet", "created_at"}


async def conversation_with(
    store: ChatStore, user: User, contents: Sequence[str], title: str = "search"
) -> Conversation:
    conversation = await store.create_conversation(user.user_id, title=title)
    for content in contents:
        # One append each: the order of created_at is the order given.
        await store.append_message(
            user.user_id, conversation.id, {"role": "user", "content": content}
        )
    return conversation


async def search(
    client: httpx.AsyncClient, user: User, q: str | None, **params: str | int
) -> list[dict[str, Any]]:
    query: dict[str, str | int] = dict(params)
    if q is not None:
        query["q"] = q
    response = await client.get("/api/search", params=query, headers=user.headers)
    assert_status(response, 200)
    body = response.json()
    assert set(body) == {"data"}, body
    hits: list[dict[str, Any]] = body["data"]
    for hit in hits:
        assert set(hit) == HIT_KEYS, hit
    return hits


def seqs(hits: list[dict[str, Any]]) -> set[int]:
    return {hit["seq"] for hit in hits}


async def test_finds_only_the_callers_own_messages(
    client: httpx.AsyncClient, store: ChatStore, user: User, other_user: User
) -> None:
    text = "the quetzal flies over the volcano"
    mine = await conversation_with(store, user, [text, "nothing to see"])
    theirs = await conversation_with(store, other_user, [text, text])

    hits = await search(client, user, "quetzal")
    assert [(h["conversation_id"], h["seq"]) for h in hits] == [(str(mine.id), 1)]
    assert hits[0]["role"] == "user"
    assert "<mark>quetzal</mark>" in hits[0]["snippet"]

    # Naming the other user's conversation finds nothing, and is no error.
    assert await search(client, user, "quetzal", conversation_id=str(theirs.id)) == []
    assert await search(client, user, "quetzal", conversation_id=str(uuid.uuid4())) == []
    their_hits = await search(client, other_user, "quetzal")
    assert {h["conversation_id"] for h in their_hits} == {str(theirs.id)}
    assert seqs(their_hits) == {1, 2}


async def test_web_search_syntax(client: httpx.AsyncClient, store: ChatStore, user: User) -> None:
    await conversation_with(
        store,
        user,
        [
            "apple banana",  # 1
            "apple cherry",  # 2
            "banana cherry",  # 3
            "quick brown fox",  # 4
            "brown quick fox",  # 5
            "kiwi tart",  # 6
            "mango tart",  # 7
        ],
    )
    # Words: every one must match.
    assert seqs(await search(client, user, "apple banana")) == {1}
    assert seqs(await search(client, user, "apple")) == {1, 2}
    # "Phrases": the words in that order, adjacent.
    assert seqs(await search(client, user, '"quick brown"')) == {4}
    assert seqs(await search(client, user, "quick brown")) == {4, 5}
    # -exclusions.
    assert seqs(await search(client, user, "apple -banana")) == {2}
    assert seqs(await search(client, user, "cherry -apple")) == {3}
    # or.
    assert seqs(await search(client, user, "kiwi or mango")) == {6, 7}
    assert seqs(await search(client, user, "kiwi OR apple")) == {1, 2, 6}
    assert seqs(await search(client, user, "tart -kiwi or banana")) == {1, 3, 7}
    # No match is an empty list.
    assert await search(client, user, "durian") == []


async def test_best_matches_come_first(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    # Appended first, so ordering by time alone would put it last.
    conversation = await conversation_with(
        store,
        user,
        [
            "marmot marmot marmot: the marmot is a marmot",
            "once a marmot in a long sentence about mountains and meadows and weather",
            "another mention of a marmot with many other words around it today",
        ],
    )
    hits = await search(client, user, "marmot", conversation_id=str(conversation.id))
    assert hits[0]["seq"] == 1
    assert seqs(hits) == {1, 2, 3}


async def test_snippet_marks_matches_and_escapes_html(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    await conversation_with(
        store, user, ['a pangolin wrote <script>alert("x")</script> & <b>bold</b> words']
    )
    (hit,) = await search(client, user, "pangolin")
    snippet = hit["snippet"]
    assert "<mark>pangolin</mark>" in snippet, snippet
    assert "&lt;script&gt;" in snippet and "&lt;/script&gt;" in snippet, snippet
    assert "&amp;" in snippet and "&lt;b&gt;bold&lt;/b&gt;" in snippet, snippet
    # The only markup in a snippet is <mark>.
    assert snippet.replace("<mark>", "").replace("</mark>", "").count("<") == 0, snippet
    assert ">" not in snippet.replace("<mark>", "").replace("</mark>", ""), snippet


async def test_conversation_id_narrows_the_search(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    first = await conversation_with(store, user, ["ocelot one", "ocelot two"])
    second = await conversation_with(store, user, ["ocelot three"])
    everywhere = await search(client, user, "ocelot")
    assert {(h["conversation_id"], h["seq"]) for h in everywhere} == {
        (str(first.id), 1),
        (str(first.id), 2),
        (str(second.id), 1),
    }
    narrowed = await search(client, user, "ocelot", conversation_id=str(second.id))
    assert [(h["conversation_id"], h["seq"]) for h in narrowed] == [(str(second.id), 1)]


async def test_limit_defaults_to_20_and_is_at_most_100(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    conversation = await store.create_conversation(user.user_id)
    for start in (0, 100):
        await store.append_messages(
            user.user_id,
            conversation.id,
            [{"role": "user", "content": f"narwhal {start + i}"} for i in range(100)],
        )
    assert len(await search(client, user, "narwhal")) == 20
    assert len(await search(client, user, "narwhal", limit=1)) == 1
    assert len(await search(client, user, "narwhal", limit=100)) == 100
    for bad in ("0", "101", "-1", "ten", "1.5", ""):
        response = await client.get(
            "/api/search", params={"q": "narwhal", "limit": bad}, headers=user.headers
        )
        error = assert_error(response, 422, "validation_error")
        assert any("limit" in item["loc"] for item in error["details"]), error


async def test_a_missing_or_empty_query_is_a_validation_error(
    client: httpx.AsyncClient, user: User
) -> None:
    for params in ({}, {"q": ""}, {"q": "   "}, {"q": "x" * 1001}, {"q": "a\x00b"}):
        response = await client.get("/api/search", params=params, headers=user.headers)
        error = assert_error(response, 422, "validation_error")
        assert any("q" in item["loc"] for item in error["details"]), (params, error)


async def test_a_malformed_conversation_id_is_a_validation_error(
    client: httpx.AsyncClient, user: User
) -> None:
    for bad in ("not-a-uuid", "123", "", "00000000-0000-0000-0000-00000000000g"):
        response = await client.get(
            "/api/search",
            params={"q": "anything", "conversation_id": bad},
            headers=user.headers,
        )
        error = assert_error(response, 422, "validation_error")
        assert any("conversation_id" in item["loc"] for item in error["details"]), (bad, error)


async def test_search_needs_a_session(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/search", params={"q": "anything"})
    assert_error(response, 401, "unauthorized")


async def test_unicode_text_is_found(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    await conversation_with(
        store,
        user,
        [
            "καλημέρα κόσμε, τι κάνεις",  # 1 Greek
            "привет мир, как дела",  # 2 Cyrillic
            "東京 タワー に 行きました",  # 3 CJK: 'simple' does not segment, so space-separated
            "naïve café déjà vu",  # 4 Latin with diacritics
            "emoji 🦜 parrot",  # 5
        ],
    )
    assert seqs(await search(client, user, "κόσμε")) == {1}
    assert seqs(await search(client, user, "мир")) == {2}
    assert seqs(await search(client, user, "東京")) == {3}
    assert seqs(await search(client, user, "タワー")) == {3}
    assert seqs(await search(client, user, "café")) == {4}
    assert seqs(await search(client, user, '"привет мир"')) == {2}
    (hit,) = await search(client, user, "привет")
    assert "<mark>привет</mark>" in hit["snippet"], hit
    assert seqs(await search(client, user, "parrot")) == {5}


async def test_any_query_text_is_answered_never_a_server_error(
    client: httpx.AsyncClient, store: ChatStore, user: User
) -> None:
    await conversation_with(store, user, ["plain words here", "a:b & c|d !e (f) 'g'"])
    odd = ["!!!", '"', '""', "-", "or", "- or -", "'", "\\", ":*", "a & b | !c", "<->", "(", "a:b"]
    for q in [*odd, "é" * 1000, "🦜"]:
        response = await client.get("/api/search", params={"q": q}, headers=user.headers)
        assert response.status_code == 200, (q, response.status_code, response.text[:300])
        assert isinstance(response.json()["data"], list), q


# -- the plan over a million messages ----------------------------------------

USERS = 1000
CONVERSATIONS_PER_USER = 10
MESSAGES_PER_CONVERSATION = 100
TOTAL = USERS * CONVERSATIONS_PER_USER * MESSAGES_PER_CONVERSATION
CONVERSATIONS = USERS * CONVERSATIONS_PER_USER


async def seed(url: str) -> None:
    """A million messages, set-based: 1,000 users with 10 conversations of
    100 messages each. Every message contains 'common'; 'rare<n>' words
    are spread thin. Two connections insert halves in parallel."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            f"""
            INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")
            SELECT 'seed-' || u, 'Seed ' || u, 'seed-' || u || '@example.test', false,
                   now(), now()
            FROM generate_series(1, {USERS}) AS u;

            INSERT INTO conversations (id, user_id, title, last_seq, message_count)
            SELECT md5('conversation-' || c)::uuid, 'seed-' || ((c - 1) % {USERS} + 1),
                   'conversation ' || c,
                   {MESSAGES_PER_CONVERSATION}, {MESSAGES_PER_CONVERSATION}
            FROM generate_series(1, {CONVERSATIONS}) AS c;
            """
        )
    finally:
        await connection.close()

    async def messages(first: int, last: int) -> None:
        part = await asyncpg.connect(url)
        try:
            await part.execute("SET synchronous_commit = off")
            await part.execute(
                f"""
                INSERT INTO messages
                    (conversation_id, seq, user_id, role, content, search_vector)
                SELECT md5('conversation-' || c)::uuid, s, 'seed-' || ((c - 1) % {USERS} + 1),
                       CASE WHEN s % 2 = 1 THEN 'user' ELSE 'assistant' END,
                       t.content, to_tsvector('simple', t.content)
                FROM generate_series({first}, {last}) AS c
                CROSS JOIN generate_series(1, {MESSAGES_PER_CONVERSATION}) AS s
                CROSS JOIN LATERAL (
                    SELECT format('common words in message %s of conversation %s: rare%s topic%s',
                                  s, c, (c * 100 + s) % 5003, s % 97) AS content
                ) AS t
                """
            )
        finally:
            await part.close()

    half = CONVERSATIONS // 2
    await asyncio.gather(messages(1, half), messages(half + 1, CONVERSATIONS))
    connection = await asyncpg.connect(url)
    try:
        # Merge GIN's pending list (as autovacuum would) and gather statistics.
        await connection.execute("SELECT gin_clean_pending_list('messages_search_idx')")
        await connection.execute("VACUUM ANALYZE messages")
    finally:
        await connection.close()


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found.extend(plan_nodes(child))
    return found


async def explain(
    connection: asyncpg.Connection[asyncpg.Record], sql: str, args: Sequence[object]
) -> dict[str, Any]:
    raw = await connection.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args)
    plan: dict[str, Any] = json.loads(raw)[0]["Plan"]
    return plan


def buffers(node: dict[str, Any]) -> int:
    return int(node["Shared Hit Blocks"]) + int(node["Shared Read Blocks"])


@pytest.mark.slow
async def test_one_users_search_is_served_by_the_index_over_a_million_messages(
    server_url: str, store: ChatStore
) -> None:
    url = await create_database(server_url, "chatstore_search1m")
    try:
        await asyncio.to_thread(migrations.apply, url)
        started = time.monotonic()
        await seed(url)
        seeded_in = time.monotonic() - started

        query = store.queries["search_messages"]
        connection = await asyncpg.connect(url)
        try:
            assert await connection.fetchval("SELECT count(*) FROM messages") == TOTAL
            relpages = await connection.fetchval(
                "SELECT relpages FROM pg_class WHERE relname = 'messages'"
            )
            values = {
                "user_id": "seed-42",
                "q": "common",
                "limit": 20,
                "conversation_id": None,
                "archived": "include",
                "search_config": "simple",
            }
            plan = await explain(connection, query.sql, query.args(values))
            nodes = plan_nodes(plan)
            kinds = [
                (n["Node Type"], n.get("Relation Name") or n.get("Index Name"), buffers(n))
                for n in nodes
            ]
            report = (
                f"seeded {TOTAL} messages in {seeded_in:.1f} s; messages has {relpages} pages; "
                f"the search touched {buffers(plan)} shared buffers "
                f"(hit {plan['Shared Hit Blocks']}, read {plan['Shared Read Blocks']}); "
                f"plan (node, relation or index, buffers) {kinds}"
            )
            print(report)
            assert any(
                n["Node Type"] == "Bitmap Index Scan"
                and n.get("Index Name") == "messages_search_idx"
                for n in nodes
            ), report
            assert not any(
                n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "messages" for n in nodes
            ), report
            # The user's 1,000 messages all match 'common'; a million do overall.
            rows = await connection.fetch(query.sql, *query.args(values))
            assert len(rows) == 20
            assert buffers(plan) < relpages // 10, report

            # What the same search costs without the owner filter (everyone's
            # matches): the owner's search is far cheaper.
            owner = f"m.user_id = ${query.params.index('user_id') + 1}"
            everyone_sql = query.sql.replace(owner, f"{owner.split(' = ')[1]}::text IS NOT NULL")
            assert everyone_sql != query.sql
            everyone = await explain(connection, everyone_sql, query.args(values))
            print(f"without the owner filter: {buffers(everyone)} shared buffers")
            assert buffers(plan) * 10 < buffers(everyone), (buffers(everyone), report)

            # Leaving archived conversations out still starts from the
            # user's matches in the index (then one conversation probe each).
            excluding = await explain(
                connection, query.sql, query.args({**values, "archived": "exclude"})
            )
            excluded_nodes = plan_nodes(excluding)
            print(f"archived=exclude: {buffers(excluding)} shared buffers")
            assert any(n.get("Index Name") == "messages_search_idx" for n in excluded_nodes), (
                excluded_nodes
            )
            assert not any(
                n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "messages"
                for n in excluded_nodes
            ), excluded_nodes

            # A rare word of one user: a handful of buffers.
            rare = await explain(connection, query.sql, query.args({**values, "q": "rare17"}))
            assert buffers(rare) < 100, buffers(rare)
        finally:
            await connection.close()
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            name = url.rsplit("/", 1)[1]
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- long messages: everything is stored, a bounded part is indexed -----------------

CAP = 1_000_000  # the default CHATSTORE_MAX_CONTENT_CHARS
INDEXED_CHARS = 50_000  # chatstore_search_text (migrations/0009)
SNIPPET_WINDOW_CHARS = 10_000  # search_messages' ts_headline input (sql/search.sql)
TSVECTOR_MAX_BYTES = 1_048_575  # PostgreSQL's MAXSTRPOS


def distinct_words(alphabet: str, total: int, first: str) -> str:
    """``first``, then words that are all different (the numbers 0, 1, 2...
    written in ``alphabet``), cut to ``total`` characters: the text whose
    tsvector is largest for its length in ordinary words."""
    base = len(alphabet)
    words = [first]
    length = len(first)
    n = 0
    while length < total:
        word = ""
        k = n
        while True:
            word += alphabet[k % base]
            k //= base
            if k == 0:
                break
        words.append(word)
        length += len(word) + 1
        n += 1
    return " ".join(words)[:total]


CYRILLIC = "абвгдежзийклмнопрстуфхцчшщыэюя"
ASCII = "abcdefghijklmnopqrstuvwxyz"
# The two reproductions of issue 9 item 6: both made the append a 500
# ("string is too long for tsvector").
LONG_MESSAGES = [
    pytest.param(CYRILLIC, 989_999, "шиншилла", id="cyrillic-989999"),
    pytest.param(ASCII, 988_000, "chinchilla", id="ascii-988000"),
]


@pytest.mark.parametrize(("alphabet", "length", "leading"), LONG_MESSAGES)
async def test_a_valid_message_of_distinct_words_up_to_the_cap_is_stored_via_http_and_found(
    client: httpx.AsyncClient,
    store: ChatStore,
    user: User,
    alphabet: str,
    length: int,
    leading: str,
) -> None:
    content = distinct_words(alphabet, length, leading)
    assert len(content) == length
    conversation = await store.create_conversation(user.user_id, title="long")
    response = await client.post(
        f"/api/conversations/{conversation.id}/messages",
        json={"role": "user", "content": content},
        headers=user.headers,
    )
    assert_status(response, 201)
    stored = await store.get_message(user.user_id, conversation.id, 1)
    assert stored.content == content  # stored whole, not cut to what is indexed

    (hit,) = await search(client, user, leading)
    assert (hit["conversation_id"], hit["seq"]) == (str(conversation.id), 1)
    assert f"<mark>{leading}</mark>" in hit["snippet"]


@pytest.mark.parametrize(("alphabet", "length", "leading"), LONG_MESSAGES)
async def test_a_valid_message_of_distinct_words_up_to_the_cap_is_stored_via_python_and_found(
    client: httpx.AsyncClient,
    store: ChatStore,
    user: User,
    alphabet: str,
    length: int,
    leading: str,
) -> None:
    content = distinct_words(alphabet, length, leading)
    (conversation,) = [await conversation_with(store, user, [content])]
    stored = await store.get_message(user.user_id, conversation.id, 1)
    assert stored.content == content

    # A word of the leading text is found; one only past the indexed part is not.
    (hit,) = await search(client, user, leading)
    assert hit["seq"] == 1
    last_word = content.rsplit(" ", 2)[-2]
    assert content.index(f" {last_word} ") > INDEXED_CHARS
    assert await search(client, user, last_word) == []


def hyphenated_pairs(total: int) -> str:
    """The worst text found for the tsvector's size: pairs of distinct 4-byte
    letters joined by a hyphen, each pair three lexemes ("𠀀-𠀁", "𠀀", "𠀁")
    with a position each, for four characters."""
    pairs = [chr(0x20000 + 2 * i) + "-" + chr(0x20001 + 2 * i) for i in range(total // 4 + 1)]
    return " ".join(pairs)[:total]


async def test_any_text_of_the_indexed_length_fits_a_tsvector(store: ChatStore, user: User) -> None:
    """The bound of migrations/0009 holds for the worst text known, with room."""
    worst = hyphenated_pairs(CAP)
    row = await store.pool.fetchrow(
        "SELECT pg_column_size(v) AS size, length(v) AS lexemes"
        " FROM to_tsvector('simple', chatstore_search_text($1)) AS v",
        worst,
    )
    assert row is not None
    size, lexemes = row["size"], row["lexemes"]
    # A tsvector is a 8-byte header, 4 bytes a lexeme, then what the limit counts.
    counted = size - 8 - 4 * lexemes
    print(f"{INDEXED_CHARS} worst-case characters: {counted} bytes of the {TSVECTOR_MAX_BYTES}")
    assert counted < TSVECTOR_MAX_BYTES // 2

    # And the whole message, a million characters of it, is stored.
    (conversation,) = [await conversation_with(store, user, [worst])]
    stored = await store.get_message(user.user_id, conversation.id, 1)
    assert stored.content == worst


async def test_snippets_of_long_messages_read_a_bounded_window_of_each(
    client: httpx.AsyncClient, store: ChatStore, user: User, database: str
) -> None:
    """ts_headline parses all the text it is given: a page of messages of a
    million characters each took seconds. Measured in buffers, not time: the
    search reads a small part of the stored text of the messages it returns."""
    rnd = random.Random(9)
    # Box-drawing characters are no words (the vector is one lexeme) and
    # compress poorly, so the stored text is large and every page of it
    # that is read shows in the plan's buffers.
    symbols = [chr(c) for c in range(0x2500, 0x2580)]
    count = 6
    contents = [
        "needle " + "".join(rnd.choices(symbols, k=CAP - 100)) + " needle" for _ in range(count)
    ]
    conversation = await conversation_with(store, user, contents)

    hits = await search(client, user, "needle", conversation_id=str(conversation.id))
    assert seqs(hits) == set(range(1, count + 1))
    for hit in hits:
        assert "<mark>needle</mark>" in hit["snippet"], hit["snippet"][:200]

    query = store.queries["search_messages"]
    values = {
        "user_id": user.user_id,
        "q": "needle",
        "limit": 20,
        "conversation_id": conversation.id,
        "archived": "include",
        "search_config": "simple",
    }
    connection = await asyncpg.connect(database)
    try:
        stored_bytes = await connection.fetchval(
            "SELECT sum(pg_column_size(content)) FROM messages WHERE conversation_id = $1",
            conversation.id,
        )
        plan = await explain(connection, query.sql, query.args(values))
    finally:
        await connection.close()
    stored_pages = stored_bytes // 8192
    print(f"{count} messages stored in {stored_pages} pages; the search read {buffers(plan)}")
    # Each snippet reads its first SNIPPET_WINDOW_CHARS characters (about 4 %
    # of each message here), not the whole text.
    assert buffers(plan) * 10 < stored_pages, (buffers(plan), stored_pages)

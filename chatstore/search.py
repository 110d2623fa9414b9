"""Full-text search over the caller's own messages (sql/search.sql)."""

from __future__ import annotations

from chatstore.dberrors import translate_errors
from chatstore.errors import NotFound, ValidationError
from chatstore.models import SearchHit, SearchResults
from chatstore.store import ChatStore, ConversationId, conversation_uuid
from chatstore.validation import check_limit

MAX_QUERY_CHARS = 1000


async def search(
    store: ChatStore,
    user_id: str,
    q: str,
    *,
    limit: int = 20,
    conversation_id: ConversationId | None = None,
) -> SearchResults:
    """Best matches first, in web-search syntax: words, "phrases",
    -exclusions and ``or``. A conversation that is not the caller's simply
    has no matches."""
    if not q.strip() or len(q) > MAX_QUERY_CHARS or "\x00" in q:
        raise ValidationError.at(
            ["query", "q"], f"q must be 1 to {MAX_QUERY_CHARS} characters of search text"
        )
    check_limit(limit, 100)
    if conversation_id is None:
        narrowed = None
    else:
        try:
            narrowed = conversation_uuid(conversation_id)
        except NotFound:
            raise ValidationError.at(
                ["query", "conversation_id"], "conversation_id must be a conversation id"
            ) from None
    with translate_errors():
        rows = await store.queries.many(
            store.executor,
            "search_messages",
            user_id=user_id,
            q=q,
            limit=limit,
            conversation_id=narrowed,
            search_config=store.settings.search_config,
        )
    return SearchResults(
        data=[
            SearchHit.model_construct(
                conversation_id=row["conversation_id"],
                seq=row["seq"],
                role=row["role"],
                snippet=row["snippet"],
                created_at=row["created_at"],
            )
            for row in rows
        ]
    )

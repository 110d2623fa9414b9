"""Full-text search over the caller's own messages (sql/search.sql)."""

from __future__ import annotations

from typing import Literal

from chatstore.database import Source, database_of
from chatstore.errors import NotFound, ValidationError
from chatstore.ids import ConversationId, conversation_uuid
from chatstore.models import SearchHit, SearchResults
from chatstore.validation import check_limit

MAX_QUERY_CHARS = 1000
MAX_PAGE = 100

# Whether matches in archived conversations are returned: include (the
# default: search finds everything the caller stored), exclude, or only.
Archived = Literal["include", "exclude", "only"]
ARCHIVED_CHOICES: tuple[Archived, ...] = ("include", "exclude", "only")


async def search(
    source: Source,
    user_id: str,
    q: str,
    *,
    limit: int = 20,
    conversation_id: ConversationId | None = None,
    archived: Archived = "include",
) -> SearchResults:
    """Best matches first, in web-search syntax: words, "phrases",
    -exclusions and ``or``. A conversation that is not the caller's simply
    has no matches."""
    if not q.strip() or len(q) > MAX_QUERY_CHARS or "\x00" in q:
        raise ValidationError.at(
            ["query", "q"], f"q must be 1 to {MAX_QUERY_CHARS} characters of search text"
        )
    check_limit(limit, MAX_PAGE)
    if archived not in ARCHIVED_CHOICES:
        raise ValidationError.at(
            ["query", "archived"], f"archived must be one of {', '.join(ARCHIVED_CHOICES)}"
        )
    if conversation_id is None:
        narrowed = None
    else:
        try:
            narrowed = conversation_uuid(conversation_id)
        except NotFound:
            raise ValidationError.at(
                ["query", "conversation_id"], "conversation_id must be a conversation id"
            ) from None
    db = database_of(source)
    rows = await db.many(
        "search_messages",
        user_id=user_id,
        q=q,
        limit=limit,
        conversation_id=narrowed,
        archived=archived,
        search_config=db.settings.search_config,
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

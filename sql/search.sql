-- Full-text search over the caller's own messages (migrations/0004).

-- name: search_messages :many
-- Web-search syntax (words, "phrases", -exclusions, or), best matches first.
-- messages_search_idx answers user_id and the text match in one GIN scan.
-- Ranking reads only the matches; the snippet (ts_headline, the expensive
-- part) is computed for the returned page only, and over the first 10,000
-- characters of each message only: ts_headline parses all the text it is
-- given, about 3.5 ms for 50,000 characters, so over whole messages (up to
-- a million characters each) one page of long messages took seconds.
-- left() reads only the slice it needs of a stored (TOASTed) value. A match
-- past that window (search indexes the first 50,000 characters,
-- migrations/0009) is still found; its snippet is the message's opening
-- words. The snippet is HTML-safe: the window is escaped first and matches
-- are wrapped in <mark>...</mark>.
-- :conversation_id NULL means every conversation of the caller.
-- Items without a chat-completions form (role NULL, migrations/0013) have
-- no content, so nothing to match; the filter says they are never hits.
-- :archived is include (every conversation), exclude (archived ones left
-- out) or only (archived ones only); for the two filters each match looks
-- its conversation up by primary key, so the filter costs one index probe
-- per match and include (the default) costs nothing.
WITH query AS (
    SELECT websearch_to_tsquery(:search_config::regconfig, :q) AS ts_query
),

hits AS (
    SELECT
        m.conversation_id, m.seq, m.role, m.content, m.created_at,
        ts_rank(m.search_vector, query.ts_query) AS rank
    FROM messages AS m
    CROSS JOIN query
    WHERE m.user_id = :user_id
        AND m.search_vector @@ query.ts_query
        AND m.role IS NOT NULL
        AND (:conversation_id::uuid IS NULL OR m.conversation_id = :conversation_id::uuid)
        AND (:archived::text = 'include' OR EXISTS (
            SELECT 1
            FROM conversations AS c
            WHERE c.id = m.conversation_id
                AND c.user_id = :user_id
                AND c.archived = (:archived::text = 'only')
        ))
    ORDER BY rank DESC, m.created_at DESC, m.conversation_id ASC, m.seq ASC
    LIMIT :limit
)

SELECT
    hits.conversation_id, hits.seq, hits.role, hits.created_at,
    ts_headline(
        :search_config::regconfig,
        replace(
            replace(replace(left(coalesce(hits.content, ''), 10000), '&', '&amp;'), '<', '&lt;'),
            '>', '&gt;'
        ),
        query.ts_query,
        'StartSel=<mark>, StopSel=</mark>, MinWords=10, MaxWords=30, MaxFragments=2'
    ) AS snippet
FROM hits
CROSS JOIN query
ORDER BY hits.rank DESC, hits.created_at DESC, hits.conversation_id ASC, hits.seq ASC;

-- name: check_search_config :scalar
-- At start-up: the configured text-search configuration exists.
SELECT :search_config::regconfig::text;

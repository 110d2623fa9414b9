-- Full-text search over the caller's own messages (migrations/0004).

-- name: search_messages :many
-- Web-search syntax (words, "phrases", -exclusions, or), best matches first.
-- messages_search_idx answers user_id and the text match in one GIN scan.
-- Ranking reads only the matches; the snippet (ts_headline, the expensive
-- part) is computed for the returned page only. The snippet is HTML-safe:
-- the content is escaped first and matches are wrapped in <mark>...</mark>.
-- :conversation_id NULL means every conversation of the caller.
WITH query AS (
    SELECT websearch_to_tsquery(:search_config::regconfig, :q) AS tsquery
),
hits AS (
    SELECT m.conversation_id, m.seq, m.role, m.content, m.created_at,
           ts_rank(m.search_vector, query.tsquery) AS rank
    FROM messages AS m
    CROSS JOIN query
    WHERE m.user_id = :user_id
      AND m.search_vector @@ query.tsquery
      AND (:conversation_id::uuid IS NULL OR m.conversation_id = :conversation_id::uuid)
    ORDER BY rank DESC, m.created_at DESC, m.conversation_id, m.seq
    LIMIT :limit
)
SELECT hits.conversation_id, hits.seq, hits.role, hits.created_at,
       ts_headline(
           :search_config::regconfig,
           replace(replace(replace(coalesce(hits.content, ''),
               '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
           query.tsquery,
           'StartSel=<mark>, StopSel=</mark>, MinWords=10, MaxWords=30, MaxFragments=2'
       ) AS snippet
FROM hits
CROSS JOIN query
ORDER BY hits.rank DESC, hits.created_at DESC, hits.conversation_id, hits.seq;

-- name: check_search_config :scalar
-- At start-up: the configured text-search configuration exists.
SELECT :search_config::regconfig::text;

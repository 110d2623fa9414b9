-- The chatbot's own reads.

-- name: chat_history :many
-- The latest :limit messages before :before (exclusive), oldest first,
-- widened back so the window never starts with a tool message cut off from
-- the assistant message whose tool call it answers: the window then starts
-- at the earliest such assistant message (found by message_tool_calls'
-- primary key, not by scanning the history). has_more tells whether older
-- messages remain before the widened window. As in list_messages_*, the
-- conversation row comes first: no row at all means not the caller's.
WITH recent AS (
    SELECT m.seq, m.role, m.tool_call_id
    FROM messages AS m
    WHERE m.conversation_id = :conversation_id
      AND m.user_id = :user_id
      AND m.seq < :before
    ORDER BY m.seq DESC
    LIMIT :limit
),
window_start AS (
    SELECT least(
        (SELECT min(recent.seq) FROM recent),
        (SELECT min(calls.seq)
         FROM recent
         JOIN message_tool_calls AS calls
           ON calls.conversation_id = :conversation_id
          AND calls.call_id = recent.tool_call_id
         WHERE recent.role = 'tool')
    ) AS seq
)
SELECT c.id AS found,
       EXISTS (
           SELECT 1
           FROM messages AS older
           WHERE older.conversation_id = c.id
             AND older.user_id = c.user_id
             AND older.seq < window_start.seq
       ) AS has_more,
       m.conversation_id, m.seq, m.role, m.content, m.name,
       m.tool_calls, m.tool_call_id, m.metadata, m.created_at
FROM conversations AS c
CROSS JOIN window_start
LEFT JOIN LATERAL (
    SELECT conversation_id, seq, role, content, name,
           tool_calls, tool_call_id, metadata, created_at
    FROM messages
    WHERE conversation_id = c.id
      AND user_id = c.user_id
      AND seq >= window_start.seq
      AND seq < :before
    ORDER BY seq ASC
) AS m ON true
WHERE c.id = :conversation_id
  AND c.user_id = :user_id
ORDER BY m.seq ASC;

-- The chatbot's own reads.

-- name: chat_history :many
-- The latest :limit messages of the active path (on_path, migrations/0012)
-- before :before (exclusive), oldest first,
-- widened back so the window never starts with a tool message cut off from
-- the assistant message whose tool call it answers: the window then starts
-- at the earliest such assistant message (found by message_tool_calls'
-- primary key, not by scanning the history). has_more tells whether older
-- messages remain before the widened window. As in list_messages_*, the
-- conversation row comes first: no row at all means not the caller's.
--
-- Every messages read filters by the parameters and by "seq > 0" (always
-- true, see messages_seq_positive): it gives the planner a range on
-- messages_active_path_idx, so each read is an ordered index scan that
-- stops early.
-- has_more is computed once (MATERIALIZED), not once per output row.
-- A tool message whose assistant message was deleted answers nothing that
-- is stored: it is left out, as in export_messages. Items without a
-- chat-completions form (role NULL, migrations/0013) are no messages: left
-- out before the window is counted.
WITH recent AS (
    SELECT m.seq, m.role, m.tool_call_id
    FROM messages AS m
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND m.on_path
        AND m.seq > 0
        AND m.seq < :before
        AND m.role IS NOT NULL
    ORDER BY m.seq DESC
    LIMIT :limit
),

window_start AS MATERIALIZED (
    SELECT least(
        (SELECT min(recent.seq) FROM recent),
        (
            SELECT min(calls.seq)
            FROM recent
            INNER JOIN message_tool_calls AS calls
                ON calls.conversation_id = :conversation_id
                    AND recent.tool_call_id = calls.call_id
                    AND calls.user_id = :user_id
            WHERE recent.role = 'tool'
        )
    ) AS seq
),

older AS MATERIALIZED (
    -- The window's start as a scalar subquery, so it is an index condition
    -- on messages_pkey, not a join.
    SELECT EXISTS(
        SELECT 1
        FROM messages AS m
        WHERE m.conversation_id = :conversation_id
            AND m.user_id = :user_id
            AND m.on_path
            AND m.seq > 0
            AND m.seq < (SELECT window_start.seq FROM window_start)
            AND m.role IS NOT NULL
        ORDER BY m.seq DESC
        LIMIT 1
    ) AS has_more
)

SELECT
    c.id AS found,
    older.has_more,
    m.conversation_id, m.seq, m.parent_seq, m.role, m.content, m.name,
    m.tool_calls, m.tool_call_id, m.metadata, m.created_at
FROM conversations AS c
CROSS JOIN window_start
CROSS JOIN older
LEFT JOIN LATERAL (
    SELECT
        messages.conversation_id, messages.seq, messages.parent_seq, messages.role,
        messages.content, messages.name,
        messages.tool_calls, messages.tool_call_id, messages.metadata, messages.created_at
    FROM messages
    WHERE messages.conversation_id = :conversation_id
        AND messages.user_id = :user_id
        AND messages.on_path
        AND messages.seq >= window_start.seq
        AND messages.seq < :before
        AND messages.role IS NOT NULL
        AND (messages.role <> 'tool' OR EXISTS (
            SELECT 1
            FROM message_tool_calls AS calls
            WHERE calls.conversation_id = :conversation_id
                AND calls.call_id = messages.tool_call_id
                AND calls.user_id = :user_id
                AND calls.seq < messages.seq
        ))
    ORDER BY messages.seq ASC
) AS m ON TRUE
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
ORDER BY m.seq ASC;

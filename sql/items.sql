-- Responses items (migrations/0013): rows of messages read as items. An
-- item is added by append_messages (sql/messages.sql) with its :items
-- element, and deleted by delete_message with :any_row; the reads here
-- take every row of the active path, role NULL or not.

-- name: list_item_rows_asc :many
-- A page of the active path's rows (items and chat-completions messages
-- alike) with seq > :after, in seq order, read from
-- messages_active_path_idx as list_messages_asc reads it. The conversation
-- row comes first: no row at all means not the caller's, one row of NULL
-- message columns an empty page.
SELECT
    c.id AS found,
    m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.item, m.item_key, m.created_at
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT seq, role, content, tool_calls, tool_call_id, item, item_key, created_at
    FROM messages
    WHERE conversation_id = :conversation_id
        AND user_id = :user_id
        AND on_path
        AND seq > :after
    ORDER BY seq ASC
    LIMIT :limit
) AS m ON TRUE
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
ORDER BY m.seq ASC;

-- name: list_item_rows_desc :many
-- As list_item_rows_asc, newest first, with seq < :before: a backward
-- scan of messages_active_path_idx.
SELECT
    c.id AS found,
    m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.item, m.item_key, m.created_at
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT seq, role, content, tool_calls, tool_call_id, item, item_key, created_at
    FROM messages
    WHERE conversation_id = :conversation_id
        AND user_id = :user_id
        AND on_path
        AND seq > 0
        AND seq < :before
    ORDER BY seq DESC
    LIMIT :limit
) AS m ON TRUE
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
ORDER BY m.seq DESC;

-- name: find_item_by_key :scalar
-- The seq of the active path's item whose key (its chatstore id, when that
-- is its own "id": migrations/0013) is :item_id, by messages_item_key_idx
-- (one at most: keys are unique within a conversation). NULL when there
-- is none, or the conversation is not the caller's.
SELECT m.seq
FROM messages AS m
WHERE m.conversation_id = :conversation_id
    AND m.user_id = :user_id
    AND m.item_key = :item_id
    AND m.on_path;

-- name: taken_item_keys :many
-- Which of :item_keys already name an item of the conversation, on any
-- branch, by messages_item_key_idx: an item added with one of them gets a
-- derived id instead (chatstore/items.py, under the conversation's lock,
-- so that no concurrent append takes it in between).
SELECT m.item_key
FROM messages AS m
WHERE m.conversation_id = :conversation_id
    AND m.user_id = :user_id
    AND m.item_key = any(:item_keys::text[])
ORDER BY m.item_key;

-- name: get_item_row :one
-- One row of the active path by its seq (an item's, or the message an item
-- is derived from); none when it is not on the path or not the caller's.
SELECT m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.item, m.item_key, m.created_at
FROM messages AS m
WHERE m.conversation_id = :conversation_id
    AND m.user_id = :user_id
    AND m.seq = :seq
    AND m.on_path;

-- name: newest_item_row :one
-- The active leaf's row (the newest of the active path: along a path seq
-- grows), what pop_item takes, after lock_conversation in its transaction
-- so two pops never take the same one. None when the conversation is empty
-- or not the caller's.
SELECT m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.item, m.item_key, m.created_at
FROM conversations AS c
INNER JOIN messages AS m
    ON c.id = m.conversation_id
        AND c.user_id = m.user_id
        AND c.tail_seq = m.seq
WHERE c.id = :conversation_id
    AND c.user_id = :user_id;

-- name: clear_items :scalar
-- Deletes every row of the conversation (every branch), after
-- lock_conversation in its transaction; the conversation stays, empty:
-- no active leaf, no messages, and last_seq where it was (seqs are never
-- reused). Returns how many rows went.
WITH deleted AS (
    DELETE FROM messages AS m
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
    RETURNING m.seq
),

emptied AS (
    UPDATE conversations AS c
    SET
        message_count = 0,
        tail_seq      = 0,
        updated_at    = greatest(c.updated_at, clock_timestamp())
    WHERE c.id = :conversation_id
        AND c.user_id = :user_id
        AND EXISTS (SELECT 1 FROM deleted)
)

SELECT count(*) AS deleted
FROM deleted;

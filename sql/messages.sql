-- Messages: the ordered history of one conversation, keyed by (conversation_id, seq).
--
-- Every write takes the conversation row first (UPDATE, or lock_conversation
-- in the same transaction), so writers to one conversation queue on that
-- single row lock, always in the same order, and cannot deadlock each other.

-- name: append_messages :many
-- Appends a batch (one message is a batch of one) in a single statement, so
-- an append is one round trip and all-or-nothing without a client-side
-- transaction. The batch arrives as parallel arrays, one element per message.
--
-- The conversation row is updated first: that takes its row lock, reserves
-- seq last_seq+1 .. last_seq+n and moves the counters in the same statement.
-- The UPDATE only matches when every rule the database must judge holds:
--   * the conversation exists and belongs to the caller;
--   * expected_last_seq, when given, is still the seq of the conversation's
--     newest message (tail_seq; 0 when empty);
--   * every tool message answers a tool call of an earlier assistant message,
--     stored (message_tool_calls) or earlier in this batch.
-- When it does not match, nothing is written and no row comes back; the
-- store then asks diagnose_append why.
--
-- tool_calls and metadatas arrive as text[] of JSON documents: a driver
-- reads a Python list inside a list as one more array dimension.
WITH batch AS (
    SELECT b.ord, b.role, b.content, b.name, b.tool_calls, b.tool_call_id, b.metadata
    FROM unnest(
            :roles::text[],
            :contents::text[],
            :names::text[],
            :tool_calls::text[]::jsonb[],
            :tool_call_ids::text[],
            :metadatas::text[]::jsonb[]
        ) WITH ORDINALITY AS b (role, content, name, tool_calls, tool_call_id, metadata, ord)
),

conversation AS (
    UPDATE conversations AS c
    SET
        last_seq      = c.last_seq + cardinality(:roles::text[]),
        tail_seq      = c.last_seq + cardinality(:roles::text[]),
        message_count = c.message_count + cardinality(:roles::text[]),
        updated_at    = greatest(c.updated_at, clock_timestamp())
    WHERE c.id = :conversation_id
        AND c.user_id = :user_id
        AND (:expected_last_seq::bigint IS NULL OR c.tail_seq = :expected_last_seq::bigint)
        AND NOT EXISTS (
            SELECT 1
            FROM batch AS t
            WHERE t.role = 'tool'
                AND NOT EXISTS (
                    SELECT 1
                    FROM message_tool_calls AS stored_call
                    WHERE stored_call.conversation_id = c.id
                        AND stored_call.call_id = t.tool_call_id
                )
                AND NOT EXISTS (
                    SELECT 1
                    FROM batch AS earlier
                    CROSS JOIN LATERAL jsonb_array_elements(earlier.tool_calls) AS tool_call (value)
                    WHERE earlier.ord < t.ord
                        AND tool_call.value ->> 'id' = t.tool_call_id
                )
        )
    RETURNING c.id, c.user_id, c.last_seq - cardinality(:roles::text[]) AS base_seq
),

inserted AS (
    -- search_vector with the configured text-search configuration
    -- (migrations/0004.search.sql), over the message's first 50,000
    -- characters (chatstore_search_text, migrations/0009): a tsvector holds
    -- at most 1 MB, so a long message of distinct words would not fit, and
    -- the message is stored whole all the same.
    INSERT INTO messages
    (
        conversation_id, seq, user_id, role, content, name,
        tool_calls, tool_call_id, metadata, search_vector
    )
    SELECT
        conversation.id, conversation.base_seq + batch.ord AS seq, conversation.user_id,
        batch.role, batch.content, batch.name,
        batch.tool_calls, batch.tool_call_id, batch.metadata,
        to_tsvector(
            :search_config::regconfig, chatstore_search_text(batch.content)
        ) AS search_vector
    FROM conversation
    CROSS JOIN batch
    RETURNING
        conversation_id, seq, role, content, name,
        tool_calls, tool_call_id, metadata, created_at
),

calls AS (
    -- A reused call id within the conversation violates the primary key and
    -- fails the whole statement: a history with two answers to "call_1"
    -- is one that chat-completions APIs reject.
    INSERT INTO message_tool_calls (conversation_id, call_id, seq)
    SELECT inserted.conversation_id, tool_call.value ->> 'id' AS call_id, inserted.seq
    FROM inserted
    CROSS JOIN LATERAL jsonb_array_elements(inserted.tool_calls) AS tool_call (value)
    WHERE inserted.tool_calls IS NOT NULL
)

SELECT
    conversation_id, seq, role, content, name,
    tool_calls, tool_call_id, metadata, created_at
FROM inserted
ORDER BY seq;

-- name: diagnose_append :one
-- Only after append_messages stored nothing: why. No row when the
-- conversation is not the caller's; tail_seq is what expected_last_seq is
-- compared with; known_call_ids are the tool_call_ids of the batch that the
-- conversation does have.
SELECT
    c.tail_seq,
    ARRAY(
        SELECT stored_call.call_id
        FROM message_tool_calls AS stored_call
        WHERE stored_call.conversation_id = c.id
            AND stored_call.call_id = ANY(:tool_call_ids::text[])
    ) AS known_call_ids
FROM conversations AS c
WHERE c.id = :conversation_id
    AND c.user_id = :user_id;

-- name: get_message :one
-- One message by its position; the owner filter makes another user's
-- message "not found".
SELECT
    conversation_id, seq, role, content, name,
    tool_calls, tool_call_id, metadata, created_at
FROM messages
WHERE conversation_id = :conversation_id
    AND user_id = :user_id
    AND seq = :seq;

-- name: list_messages_asc :many
-- A page in seq order between two exclusive bounds (the store passes 0 and
-- the largest bigint when the caller gives none), read from messages_pkey.
-- The conversation row comes first so that one round trip also tells an
-- empty conversation (one row of NULL message columns) from a missing or
-- foreign one (no row at all). The inner query filters by the parameters,
-- not by c.id: given the value, the planner walks messages_pkey in order and
-- stops after :limit rows, whatever the conversation's size (with c.id it
-- planned for an average conversation and sorted the whole of a big one).
SELECT
    c.id AS found,
    m.conversation_id, m.seq, m.role, m.content, m.name,
    m.tool_calls, m.tool_call_id, m.metadata, m.created_at
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT
        conversation_id, seq, role, content, name,
        tool_calls, tool_call_id, metadata, created_at
    FROM messages
    WHERE conversation_id = :conversation_id
        AND user_id = :user_id
        AND seq > :after
        AND seq < :before
    ORDER BY seq ASC
    LIMIT :limit
) AS m ON TRUE
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
ORDER BY m.seq ASC;

-- name: list_messages_desc :many
-- As list_messages_asc, newest first: a backward scan of messages_pkey.
SELECT
    c.id AS found,
    m.conversation_id, m.seq, m.role, m.content, m.name,
    m.tool_calls, m.tool_call_id, m.metadata, m.created_at
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT
        conversation_id, seq, role, content, name,
        tool_calls, tool_call_id, metadata, created_at
    FROM messages
    WHERE conversation_id = :conversation_id
        AND user_id = :user_id
        AND seq > :after
        AND seq < :before
    ORDER BY seq DESC
    LIMIT :limit
) AS m ON TRUE
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
ORDER BY m.seq DESC;

-- name: lock_conversation :scalar
-- First statement of a delete's transaction: takes the conversation row
-- lock, as every writer does first. The delete that follows is a statement
-- of its own so that its snapshot is taken after the lock is granted and
-- sees whatever the writer before it committed. NULL: not the caller's.
SELECT c.id
FROM conversations AS c
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
FOR UPDATE;

-- name: delete_message :execrows
-- Deletes one message (after lock_conversation, in its transaction) and
-- moves the counters by what was really deleted; its seq is never reused.
-- When it was the newest message, tail_seq falls back to the one before it.
WITH deleted AS (
    DELETE FROM messages AS m
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND m.seq = :seq
    RETURNING m.seq
)

UPDATE conversations AS c
SET
    message_count = c.message_count - (SELECT count(*) FROM deleted),
    tail_seq      = CASE
        WHEN c.tail_seq = :seq THEN coalesce(
            (
                SELECT max(m.seq)
                FROM messages AS m
                WHERE m.conversation_id = :conversation_id
                    AND m.user_id = :user_id
                    AND m.seq > 0
                    AND m.seq < :seq
            ), 0
        )
        ELSE c.tail_seq
    END,
    updated_at    = greatest(c.updated_at, clock_timestamp())
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
    AND EXISTS (SELECT 1 FROM deleted);

-- name: truncate_messages :scalar
-- Edit-and-regenerate: deletes every message with seq >= from_seq (after
-- lock_conversation, in its transaction) and returns how many went.
-- tail_seq becomes the newest message left before from_seq (0 if none).
WITH deleted AS (
    DELETE FROM messages AS m
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND m.seq >= :from_seq
    RETURNING m.seq
),

counted AS (
    UPDATE conversations AS c
    SET
        message_count = c.message_count - (SELECT count(*) FROM deleted),
        tail_seq      = coalesce(
            (
                SELECT max(m.seq)
                FROM messages AS m
                WHERE m.conversation_id = :conversation_id
                    AND m.user_id = :user_id
                    AND m.seq > 0
                    AND m.seq < :from_seq
            ), 0
        ),
        updated_at    = greatest(c.updated_at, clock_timestamp())
    WHERE c.id = :conversation_id
        AND c.user_id = :user_id
        AND EXISTS (SELECT 1 FROM deleted)
)

SELECT count(*)
FROM deleted;

-- Erasure (DELETE /api/me/data, `chatstore erase --user ID`): everything a
-- user stored in chatstore goes, in one transaction; the "user" row and
-- better-auth's own rows (session, account: the sign-in itself) stay.
--
-- Every table holding a user's data, and how it goes:
--   conversations       erase_conversations (by user_id)
--   messages            with their conversation (ON DELETE CASCADE)
--   message_tool_calls  with their message (ON DELETE CASCADE)
--   idempotency_keys    erase_idempotency_keys (by user_id; also those of a
--                       conversation, which its delete would cascade to)
-- tests/http/test_http_erasure.py checks this list against the schema.

-- name: lock_user_conversations :scalar
-- First of all: the user's conversation rows, locked as every writer takes
-- a conversation first (sql/messages.sql), before erase_idempotency_keys
-- locks the keys. A chat reply being stored holds its conversation, then its
-- key: taking the keys first would deadlock with it. In id order, so that
-- two erasures of one user queue rather than cross. Returns how many.
SELECT count(*) AS locked_count
FROM (
    SELECT c.id
    FROM conversations AS c
    WHERE c.user_id = :user_id
    ORDER BY c.id
    FOR UPDATE
) AS locked_conversations;

-- name: erase_idempotency_keys :scalar
-- After lock_user_conversations, so that the count includes the keys of the conversations deleted
-- next (their cascade would otherwise take them uncounted). By the primary
-- key's user_id prefix.
WITH deleted AS (
    DELETE FROM idempotency_keys AS k
    WHERE k.user_id = :user_id
    RETURNING k.key
)

SELECT count(*) AS idempotency_keys
FROM deleted;

-- name: erase_conversations :one
-- Every conversation of the user, and (cascading) their messages and tool
-- calls; message_count says how many messages each held. By the user_id
-- prefix of conversations_user_archived_activity_idx.
WITH deleted AS (
    DELETE FROM conversations AS c
    WHERE c.user_id = :user_id
    RETURNING c.message_count
)

SELECT
    count(*) AS conversations,
    coalesce(sum(deleted.message_count), 0)::bigint AS messages
FROM deleted;

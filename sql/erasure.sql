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
-- tests/features/test_erasure.py checks this list against the schema.

-- name: erase_idempotency_keys :scalar
-- First, so that the count includes the keys of the conversations deleted
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

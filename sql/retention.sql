-- Retention (CHATSTORE_RETENTION_DAYS): conversations with no activity
-- (updated_at) since a cut-off are deleted by a background job on every
-- server process, and by `chatstore purge`. Everything that goes with a
-- conversation goes by ON DELETE CASCADE: its messages, their tool calls,
-- and the idempotency keys whose stored responses hold any of it
-- (migrations/0002, 0007).

-- name: delete_idle_conversations :many
-- One bounded batch, idle the longest first (conversations_activity_idx,
-- migrations/0011: never a scan of the table). SKIP LOCKED: a conversation
-- another process is deleting, or that a writer holds (an append, which
-- will move its updated_at anyway), is left for a later run instead of
-- waited for, so several processes never queue on each other. FOR UPDATE
-- rechecks updated_at on the newest version of a row that changed since
-- the snapshot, so a conversation appended to meanwhile is not deleted;
-- the DELETE checks it again all the same.
WITH doomed AS (
    SELECT c.id
    FROM conversations AS c
    WHERE c.updated_at < :cutoff
    ORDER BY c.updated_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)

DELETE FROM conversations AS c
-- ARRAY(...): the batch's ids as one value, so the delete finds each row by
-- its primary key; a join with the CTE may be planned as a scan of the table.
WHERE c.id = ANY(ARRAY(SELECT doomed.id FROM doomed))
    AND c.updated_at < :cutoff
RETURNING c.id, c.user_id, c.message_count;

-- name: idle_conversations :many
-- What delete_idle_conversations would delete, for `chatstore purge
-- --dry-run`: by owner, then idle the longest first. Reads only.
SELECT c.user_id, c.id, c.message_count, c.updated_at
FROM conversations AS c
WHERE c.updated_at < :cutoff
ORDER BY c.user_id, c.updated_at, c.id;

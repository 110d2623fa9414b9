-- Puts back the index 0011 replaced before dropping the new ones, so the
-- listing always has one. Not in a transaction, like the migration.
-- transactional: false
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction, require-lock-timeout

CREATE INDEX CONCURRENTLY IF NOT EXISTS conversations_user_activity_idx
    ON conversations (user_id, updated_at DESC, id DESC);

DROP INDEX CONCURRENTLY IF EXISTS conversations_activity_idx;

DROP INDEX CONCURRENTLY IF EXISTS conversations_user_archived_activity_idx;

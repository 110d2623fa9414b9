-- Indexes for the conversation lifecycle (issue 14), built CONCURRENTLY so
-- that appends and listings go on while they build.
--
-- conversations_user_archived_activity_idx replaces
-- conversations_user_activity_idx: the listing now filters on archived
-- (list_conversations_first/_after in sql/conversations.sql), and with
-- archived between user_id and the sort columns one index scan still
-- returns a page in order, for archived and unarchived alike. Every other
-- query that looked conversations up by user_id alone (the erasure's delete,
-- sql/lifecycle.sql) uses its user_id prefix as before.
--
-- conversations_activity_idx: the retention job takes the conversations
-- idle the longest first, a bounded batch at a time
-- (claim_expired_conversations in sql/lifecycle.sql), never a scan of the
-- table.
--
-- Not in a transaction (CREATE INDEX CONCURRENTLY cannot run in one), so
-- each statement commits by itself and lock_timeout is set for the session
-- and reset at the end. A concurrent build that fails leaves an INVALID
-- index behind: each CREATE is preceded by a DROP ... IF EXISTS so that
-- running the migration again after a failure starts clean.
-- transactional: false
-- depends: 0010.conversation-archive
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction

SET lock_timeout = '5s';

DROP INDEX CONCURRENTLY IF EXISTS conversations_user_archived_activity_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS conversations_user_archived_activity_idx
    ON conversations (user_id, archived, updated_at DESC, id DESC);

DROP INDEX CONCURRENTLY IF EXISTS conversations_activity_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS conversations_activity_idx
    ON conversations (updated_at);

-- Only once its replacement is valid: the listing is never left without one.
DROP INDEX CONCURRENTLY IF EXISTS conversations_user_activity_idx;

RESET lock_timeout;

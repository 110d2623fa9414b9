-- transactional: false
-- Keys ready for Citus (issue 16): every table that holds a user's data can
-- be distributed by user_id, all of them co-located (docs/scaling.md).
--
-- Citus requires the distribution column in every primary key and unique
-- constraint of a distributed table, and in both sides of a foreign key
-- between distributed tables: a shard can only check what it holds. Today
-- three keys lack user_id, and so do the foreign keys that target them:
--
--   conversations       PRIMARY KEY (id)                -> (id, user_id)
--                       (its UNIQUE (id, user_id) becomes the key itself)
--   messages            PRIMARY KEY (conversation_id, seq)
--                                             -> (conversation_id, seq, user_id)
--   message_tool_calls  PRIMARY KEY (conversation_id, call_id)
--                                             -> (conversation_id, call_id, user_id)
--                       gains user_id (its message's), and its foreign key
--                       to messages includes it
--   idempotency_keys    FOREIGN KEY (conversation_id) -> conversations (id)
--                       -> (conversation_id, user_id) -> conversations (id, user_id)
--
-- Why user_id last in the keys: a conversation id (a random uuid) already
-- names one owner, so the new keys are exactly as unique as the old ones,
-- and every lookup by the old key's columns is still an exact probe of the
-- same index; user_id is checked in the entry found. No query's plan
-- changes (tests/test_sql.py). The queries name user_id for every table
-- all the same: that is what lets Citus route them to one shard.
--
-- How, without blocking appends for longer than a catalog update: each new
-- key is built first as a unique index, CONCURRENTLY; one statement (a DO
-- block, one transaction) then swaps the keys and re-creates the foreign
-- keys NOT VALID, and each foreign key is validated afterwards, which
-- reads the table without blocking its writers (SHARE UPDATE EXCLUSIVE).
-- message_tool_calls.user_id is backfilled, then made NOT NULL by way of a
-- validated CHECK, so that SET NOT NULL does not scan the table under an
-- ACCESS EXCLUSIVE lock.
--
-- Not transactional (CREATE INDEX CONCURRENTLY cannot run in a
-- transaction), and every step can be run again: should one fail (a
-- lock_timeout, say), rerunning the migration finishes it. A concurrent
-- build that failed leaves an INVALID index behind, so each is dropped
-- before it is built, as in 0011 and 0012.
--
-- Run it with no older chatstore process writing, as 0012: an older process
-- inserts tool calls without user_id, and such a row stops the NOT NULL
-- step below until the migration is run again (its backfill fills it).
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction
-- squawk-ignore-file ban-drop-constraint, constraint-missing-not-valid
-- (the constraints dropped are the keys replaced, each in the transaction
-- that adds its successor, and this migration's own temporary CHECK; each
-- NOT VALID and its VALIDATE are separate transactions, as every statement
-- here commits by itself)
-- depends: 0014.announce-after-commit

SET lock_timeout = '5s';

-- message_tool_calls.user_id: its message's owner. NULL on the rows that
-- exist until the backfill; the constraint and the new keys come after.
ALTER TABLE message_tool_calls
ADD COLUMN IF NOT EXISTS user_id text;

UPDATE message_tool_calls AS calls
SET user_id = m.user_id
FROM messages AS m
WHERE calls.user_id IS NULL
    AND m.conversation_id = calls.conversation_id
    AND m.seq = calls.seq;

-- A CHECK of this migration's own, left behind by a run that failed
-- before the end: added again below.
ALTER TABLE message_tool_calls
DROP CONSTRAINT IF EXISTS message_tool_calls_user_id_not_null;

ALTER TABLE message_tool_calls
ADD CONSTRAINT message_tool_calls_user_id_not_null
CHECK (user_id IS NOT NULL) NOT VALID;

-- Not in the ADD's transaction: this migration is not transactional, each
-- statement commits by itself, so no read waits for the validation.
ALTER TABLE message_tool_calls
VALIDATE CONSTRAINT message_tool_calls_user_id_not_null;

-- Proven by the validated CHECK: no scan under the ALTER's lock.
ALTER TABLE message_tool_calls
ALTER COLUMN user_id SET NOT NULL;

-- Its work is done: NOT NULL holds the same guarantee.
ALTER TABLE message_tool_calls
DROP CONSTRAINT message_tool_calls_user_id_not_null;

-- Left behind by the rollback, when yoyo ran part of it: after a failed
-- statement of a non-transactional migration, yoyo undoes the statements
-- already run with the rollback file's statements paired to them by
-- position, and those may stop half-way too. Only a leftover has these
-- names (a finished rollback renames each to its table's "_pkey" or
-- "_key"), and such a unique index without user_id would stay.
DROP INDEX CONCURRENTLY IF EXISTS conversations_id_pkey;

DROP INDEX CONCURRENTLY IF EXISTS conversations_id_user_id_unique;

DROP INDEX CONCURRENTLY IF EXISTS messages_conversation_seq_pkey;

DROP INDEX CONCURRENTLY IF EXISTS message_tool_calls_conversation_call_pkey;

-- The new keys, as unique indexes first. The swap below renames each to
-- its table's "_pkey".
DROP INDEX CONCURRENTLY IF EXISTS conversations_id_user_id_pkey;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS conversations_id_user_id_pkey
ON conversations (id, user_id);

DROP INDEX CONCURRENTLY IF EXISTS messages_conversation_seq_user_pkey;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS messages_conversation_seq_user_pkey
ON messages (conversation_id, seq, user_id);

DROP INDEX CONCURRENTLY IF EXISTS message_tool_calls_conversation_call_user_pkey;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS message_tool_calls_conversation_call_user_pkey
ON message_tool_calls (conversation_id, call_id, user_id);

-- The swap, in one transaction: the tables are never without their keys or
-- foreign keys as another transaction sees them. The locks are taken
-- first, all at once, in the order every writer takes them (the
-- conversation, then its messages, tool calls and keys), so the swap
-- queues behind writers without deadlocking with one, and gives up after
-- lock_timeout rather than hold appends back.
DO $swap$
BEGIN
    IF to_regclass('conversations_id_user_id_pkey') IS NOT NULL THEN
        LOCK TABLE conversations, messages, message_tool_calls, idempotency_keys
        IN ACCESS EXCLUSIVE MODE;

        ALTER TABLE idempotency_keys
        DROP CONSTRAINT IF EXISTS idempotency_keys_conversation_fkey;
        ALTER TABLE messages
        DROP CONSTRAINT IF EXISTS messages_conversation_fkey;
        ALTER TABLE conversations
        DROP CONSTRAINT conversations_pkey,
        DROP CONSTRAINT IF EXISTS conversations_id_user_id_key,
        ADD CONSTRAINT conversations_pkey PRIMARY KEY
        USING INDEX conversations_id_user_id_pkey;
        ALTER TABLE messages
        ADD CONSTRAINT messages_conversation_fkey
        FOREIGN KEY (conversation_id, user_id)
        REFERENCES conversations (id, user_id) ON DELETE CASCADE NOT VALID;
        ALTER TABLE idempotency_keys
        ADD CONSTRAINT idempotency_keys_conversation_fkey
        FOREIGN KEY (conversation_id, user_id)
        REFERENCES conversations (id, user_id) ON DELETE CASCADE NOT VALID;
    END IF;

    IF to_regclass('messages_conversation_seq_user_pkey') IS NOT NULL THEN
        LOCK TABLE conversations, messages, message_tool_calls, idempotency_keys
        IN ACCESS EXCLUSIVE MODE;

        ALTER TABLE message_tool_calls
        DROP CONSTRAINT IF EXISTS message_tool_calls_message_fkey;
        ALTER TABLE messages
        DROP CONSTRAINT messages_pkey,
        ADD CONSTRAINT messages_pkey PRIMARY KEY
        USING INDEX messages_conversation_seq_user_pkey;
        ALTER TABLE message_tool_calls
        ADD CONSTRAINT message_tool_calls_message_fkey
        FOREIGN KEY (conversation_id, seq, user_id)
        REFERENCES messages (conversation_id, seq, user_id) ON DELETE CASCADE NOT VALID;
    END IF;

    IF to_regclass('message_tool_calls_conversation_call_user_pkey') IS NOT NULL THEN
        LOCK TABLE conversations, messages, message_tool_calls, idempotency_keys
        IN ACCESS EXCLUSIVE MODE;

        ALTER TABLE message_tool_calls
        DROP CONSTRAINT message_tool_calls_pkey,
        ADD CONSTRAINT message_tool_calls_pkey PRIMARY KEY
        USING INDEX message_tool_calls_conversation_call_user_pkey;
    END IF;
END
$swap$;

-- Each validation reads its table once, taking a lock that lets appends and
-- deletes go on.
ALTER TABLE messages
VALIDATE CONSTRAINT messages_conversation_fkey;

ALTER TABLE message_tool_calls
VALIDATE CONSTRAINT message_tool_calls_message_fkey;

ALTER TABLE idempotency_keys
VALIDATE CONSTRAINT idempotency_keys_conversation_fkey;

-- The planner's estimate for "conversation_id = $1 AND user_id = $2":
-- without being told, it takes the two conditions as independent and
-- multiplies their selectivities, so a conversation's messages are
-- estimated at a fraction of a row, and a walk of a conversation's tree by
-- an index led by conversation_id looked free (truncate_messages and
-- switch_active_leaf, which now name user_id for every table they read,
-- walked every message of a conversation once per level of the tree
-- instead of probing messages_parent_idx). A functional dependency says
-- that a conversation names its owner. ANALYZE fills it now (reading a
-- sample, taking a lock that lets every write go on) rather than at
-- autovacuum's next visit.
CREATE STATISTICS IF NOT EXISTS messages_conversation_user_stats (DEPENDENCIES)
ON conversation_id, user_id FROM messages;

CREATE STATISTICS IF NOT EXISTS message_tool_calls_conversation_user_stats (DEPENDENCIES)
ON conversation_id, user_id FROM message_tool_calls;

ANALYZE messages;

ANALYZE message_tool_calls;

-- messages_active_path_idx rebuilt, so that it is newer than the new
-- messages_pkey. Why: with user_id in the primary key, both indexes answer
-- a page of the active path's reads (conversation_id, user_id and the seq
-- range are index conditions on each) at exactly the same estimated cost
-- in a generic plan, and PostgreSQL then keeps the newest index (the
-- planner lists a table's indexes newest first and keeps the first of two
-- equal paths). The primary key would read the messages of every branch
-- and filter on_path; the partial index reads the active path only.
-- tests/test_sql.py's generic-plan cases fail without this step. REINDEX
-- CONCURRENTLY builds a new index (a new, higher OID) with the current
-- definition, whatever a migration before this one made it, and swaps it
-- in; one that failed leaves an INVALID "_ccnew" or "_ccold" index behind,
-- dropped first.
DROP INDEX CONCURRENTLY IF EXISTS messages_active_path_idx_ccnew;

DROP INDEX CONCURRENTLY IF EXISTS messages_active_path_idx_ccold;

REINDEX INDEX CONCURRENTLY messages_active_path_idx;

RESET lock_timeout;

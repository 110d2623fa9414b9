-- transactional: false
-- Undo 0015: the keys as they were (conversations (id) with UNIQUE (id,
-- user_id), messages (conversation_id, seq), message_tool_calls
-- (conversation_id, call_id) without user_id, the idempotency keys'
-- foreign key on conversation_id alone), built the same way: the old keys as
-- unique indexes CONCURRENTLY, one swap, then the foreign keys validated.
-- A rollback drops what its migration created, and an operator runs it on
-- purpose: it waits for its locks rather than give up half-way through a
-- deliberate undo.
-- squawk-ignore-file require-lock-timeout, ban-drop-column
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction

DROP STATISTICS IF EXISTS messages_conversation_user_stats;

DROP STATISTICS IF EXISTS message_tool_calls_conversation_user_stats;

-- Left behind by a run of 0015 that stopped before its swap (its unique
-- indexes are renamed to the "_pkey" names by the swap).
DROP INDEX CONCURRENTLY IF EXISTS conversations_id_user_id_pkey;

DROP INDEX CONCURRENTLY IF EXISTS messages_conversation_seq_user_pkey;

DROP INDEX CONCURRENTLY IF EXISTS message_tool_calls_conversation_call_user_pkey;

DROP INDEX CONCURRENTLY IF EXISTS conversations_id_pkey;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS conversations_id_pkey
ON conversations (id);

DROP INDEX CONCURRENTLY IF EXISTS conversations_id_user_id_unique;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS conversations_id_user_id_unique
ON conversations (id, user_id);

DROP INDEX CONCURRENTLY IF EXISTS messages_conversation_seq_pkey;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS messages_conversation_seq_pkey
ON messages (conversation_id, seq);

DROP INDEX CONCURRENTLY IF EXISTS message_tool_calls_conversation_call_pkey;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS message_tool_calls_conversation_call_pkey
ON message_tool_calls (conversation_id, call_id);

DO $swap$
BEGIN
    LOCK TABLE conversations, messages, message_tool_calls, idempotency_keys
    IN ACCESS EXCLUSIVE MODE;

    IF to_regclass('message_tool_calls_conversation_call_pkey') IS NOT NULL THEN
        ALTER TABLE message_tool_calls
        DROP CONSTRAINT IF EXISTS message_tool_calls_message_fkey,
        DROP CONSTRAINT message_tool_calls_pkey,
        ADD CONSTRAINT message_tool_calls_pkey PRIMARY KEY
        USING INDEX message_tool_calls_conversation_call_pkey;
    END IF;

    IF to_regclass('messages_conversation_seq_pkey') IS NOT NULL THEN
        ALTER TABLE message_tool_calls
        DROP CONSTRAINT IF EXISTS message_tool_calls_message_fkey;
        ALTER TABLE messages
        DROP CONSTRAINT messages_pkey,
        ADD CONSTRAINT messages_pkey PRIMARY KEY
        USING INDEX messages_conversation_seq_pkey;
        ALTER TABLE message_tool_calls
        ADD CONSTRAINT message_tool_calls_message_fkey
        FOREIGN KEY (conversation_id, seq)
        REFERENCES messages (conversation_id, seq) ON DELETE CASCADE NOT VALID;
    END IF;

    IF to_regclass('conversations_id_pkey') IS NOT NULL THEN
        ALTER TABLE idempotency_keys
        DROP CONSTRAINT IF EXISTS idempotency_keys_conversation_fkey;
        ALTER TABLE messages
        DROP CONSTRAINT IF EXISTS messages_conversation_fkey;
        ALTER TABLE conversations
        DROP CONSTRAINT conversations_pkey,
        ADD CONSTRAINT conversations_pkey PRIMARY KEY
        USING INDEX conversations_id_pkey,
        ADD CONSTRAINT conversations_id_user_id_key UNIQUE
        USING INDEX conversations_id_user_id_unique;
        ALTER TABLE messages
        ADD CONSTRAINT messages_conversation_fkey
        FOREIGN KEY (conversation_id, user_id)
        REFERENCES conversations (id, user_id) ON DELETE CASCADE NOT VALID;
        ALTER TABLE idempotency_keys
        ADD CONSTRAINT idempotency_keys_conversation_fkey
        FOREIGN KEY (conversation_id)
        REFERENCES conversations (id) ON DELETE CASCADE NOT VALID;
    END IF;
END
$swap$;

ALTER TABLE messages
VALIDATE CONSTRAINT messages_conversation_fkey;

ALTER TABLE message_tool_calls
VALIDATE CONSTRAINT message_tool_calls_message_fkey;

ALTER TABLE idempotency_keys
VALIDATE CONSTRAINT idempotency_keys_conversation_fkey;

ALTER TABLE message_tool_calls
DROP COLUMN IF EXISTS user_id;

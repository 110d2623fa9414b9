-- Back to the table CHECK constraints of 0002 and 0013: the columns return
-- to their base types (a catalog change: from a domain to its base type
-- PostgreSQL neither rewrites nor scans), the domains go, and every rule
-- is a table constraint again, under its own name.
--
-- As the migration: the swap is one transaction (a DO block), in which
-- the rules come back NOT VALID, so that no scan runs under its ACCESS
-- EXCLUSIVE lock; each is then validated by a statement, and a
-- transaction, of its own, which lets appends and reads go on. Every step
-- can be run again.
-- transactional: false
-- squawk-ignore-file ban-drop-constraint, constraint-missing-not-valid
-- (the two-column rules are dropped only to be added back in the same
-- transaction; each VALIDATE follows its NOT VALID in a transaction of its
-- own)
-- squawk-ignore-file require-lock-timeout
-- (an operator runs a rollback on purpose: it waits for its locks rather
-- than give up half-way through a deliberate undo)

DO $swap$
BEGIN
    IF to_regtype('messages_role') IS NOT NULL THEN
        LOCK TABLE conversations, messages IN ACCESS EXCLUSIVE MODE;

        ALTER TABLE messages
        DROP CONSTRAINT messages_tool_call_id_only_and_always_on_tool,
        DROP CONSTRAINT messages_tool_calls_only_on_assistant,
        DROP CONSTRAINT messages_content_null_only_with_tool_calls,
        DROP CONSTRAINT messages_role_or_item,
        DROP CONSTRAINT messages_item_key_only_on_items;

        ALTER TABLE messages
        ALTER COLUMN role TYPE text,
        ALTER COLUMN name TYPE text,
        ALTER COLUMN tool_calls TYPE jsonb,
        ALTER COLUMN metadata TYPE jsonb,
        ALTER COLUMN item TYPE jsonb;

        ALTER TABLE conversations
        ALTER COLUMN title TYPE text,
        ALTER COLUMN metadata TYPE jsonb;

        DROP DOMAIN messages_role;
        DROP DOMAIN messages_name;
        DROP DOMAIN messages_tool_calls;
        DROP DOMAIN messages_metadata;
        DROP DOMAIN messages_item;
        DROP DOMAIN conversations_title;
        DROP DOMAIN conversations_metadata;

        ALTER TABLE messages
        ADD CONSTRAINT messages_role_known
        CHECK (role IN ('system', 'developer', 'user', 'assistant', 'tool')) NOT VALID,
        ADD CONSTRAINT messages_name_format
        CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$') NOT VALID,
        ADD CONSTRAINT messages_tool_calls_non_empty_array
        CHECK (
            tool_calls IS NULL
            OR (jsonb_typeof(tool_calls) = 'array' AND jsonb_array_length(tool_calls) > 0)
        ) NOT VALID,
        ADD CONSTRAINT messages_metadata_is_object
        CHECK (jsonb_typeof(metadata) = 'object') NOT VALID,
        ADD CONSTRAINT messages_item_is_object
        CHECK (item IS NULL OR jsonb_typeof(item) = 'object') NOT VALID,
        ADD CONSTRAINT messages_tool_call_id_only_and_always_on_tool
        CHECK ((role = 'tool') = (tool_call_id IS NOT NULL)) NOT VALID,
        ADD CONSTRAINT messages_tool_calls_only_on_assistant
        CHECK (tool_calls IS NULL OR role = 'assistant') NOT VALID,
        ADD CONSTRAINT messages_content_null_only_with_tool_calls
        CHECK (role IS NULL OR content IS NOT NULL OR tool_calls IS NOT NULL) NOT VALID,
        ADD CONSTRAINT messages_role_or_item
        CHECK (
            role IS NOT NULL
            OR (item IS NOT NULL AND content IS NULL AND tool_calls IS NULL AND tool_call_id IS NULL)
        ) NOT VALID,
        ADD CONSTRAINT messages_item_key_only_on_items
        CHECK (item_key IS NULL OR item IS NOT NULL) NOT VALID;

        ALTER TABLE conversations
        ADD CONSTRAINT conversations_title_length
        CHECK (char_length(title) <= 200) NOT VALID,
        ADD CONSTRAINT conversations_metadata_is_object
        CHECK (jsonb_typeof(metadata) = 'object') NOT VALID;
    END IF;
END
$swap$;

ALTER TABLE messages VALIDATE CONSTRAINT messages_role_known;

ALTER TABLE messages VALIDATE CONSTRAINT messages_name_format;

ALTER TABLE messages VALIDATE CONSTRAINT messages_tool_calls_non_empty_array;

ALTER TABLE messages VALIDATE CONSTRAINT messages_metadata_is_object;

ALTER TABLE messages VALIDATE CONSTRAINT messages_item_is_object;

ALTER TABLE messages VALIDATE CONSTRAINT messages_tool_call_id_only_and_always_on_tool;

ALTER TABLE messages VALIDATE CONSTRAINT messages_tool_calls_only_on_assistant;

ALTER TABLE messages VALIDATE CONSTRAINT messages_content_null_only_with_tool_calls;

ALTER TABLE messages VALIDATE CONSTRAINT messages_role_or_item;

ALTER TABLE messages VALIDATE CONSTRAINT messages_item_key_only_on_items;

ALTER TABLE conversations VALIDATE CONSTRAINT conversations_title_length;

ALTER TABLE conversations VALIDATE CONSTRAINT conversations_metadata_is_object;

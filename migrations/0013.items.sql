-- Responses items (issue 12): a conversation holds OpenAI Responses items
-- as well as chat-completions messages, in the same table, so that they
-- share one seq space, one branch tree and one active path.
--
-- item: the item exactly as it was added through the items API (stored
-- verbatim, types chatstore does not know included); NULL for a row
-- appended as a chat-completions message. An item that has a
-- chat-completions form (a message with text, a function_call, a
-- function_call_output) also fills role, content, tool_calls and
-- tool_call_id, so every chat-completions read sees it as the message it
-- is; an item without one (reasoning, web_search_call, unknown types) has
-- role NULL, and every chat-completions read leaves it out
-- (role IS NOT NULL, sql/*.sql).
--
-- The checks that assumed a role on every row are replaced by ones that
-- hold for both kinds of row. Each is added NOT VALID (no scan under the
-- ACCESS EXCLUSIVE lock), then validated (a scan that lets writes go on).
--
-- item_key: the item's chatstore id when that is its own "id" (chatstore
-- decides it when the item is added, under the conversation's lock:
-- chatstore/items.py); NULL when chatstore derives the id from the seq
-- (msg_<seq>, ...), and for every chat-completions row. Unique within a
-- conversation (messages_item_key_idx, across all its branches), so that
-- an id names one item: paging after it, get and delete never mistake it.
--
-- Not transactional: the index is built CONCURRENTLY on a table that
-- already has rows. Every step can be run again after a failure (IF NOT
-- EXISTS, and each constraint and index is dropped before it is added).
-- Run it with no older chatstore process serving: an older process reads
-- every row as a chat-completions message and would fail on an item's
-- NULL role. `chatstore serve` applies migrations before it serves; stop
-- the old processes first (README, For DBAs).
-- transactional: false
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction
-- squawk-ignore-file constraint-missing-not-valid
-- (not in a transaction: each VALIDATE is a statement, and a transaction,
-- of its own, after the NOT VALID one committed)
-- squawk-ignore-file ban-drop-constraint
-- (each check is replaced in the statement that drops it, or dropped
-- before it is added again when a failed run is rerun)
-- squawk-ignore-file ban-drop-not-null
-- (the point of the migration: an item without a chat form has no role;
-- every read of messages as chat-completions messages filters on it)
-- depends: 0012.branches

SET lock_timeout = '5s';

ALTER TABLE messages
ADD COLUMN IF NOT EXISTS item jsonb,
ADD COLUMN IF NOT EXISTS item_key text;

-- A row with no role is an item without a chat form: role is now NULL
-- for those (the role_known check already lets NULL through).
ALTER TABLE messages
ALTER COLUMN role DROP NOT NULL;

ALTER TABLE messages
DROP CONSTRAINT IF EXISTS messages_item_is_object,
ADD CONSTRAINT messages_item_is_object
CHECK (item IS NULL OR jsonb_typeof(item) = 'object') NOT VALID;

ALTER TABLE messages VALIDATE CONSTRAINT messages_item_is_object;

-- Every row is a chat message, an item, or both; an item without a chat
-- form carries none of a chat message's columns.
ALTER TABLE messages
DROP CONSTRAINT IF EXISTS messages_role_or_item,
ADD CONSTRAINT messages_role_or_item
CHECK (
    role IS NOT NULL
    OR (item IS NOT NULL AND content IS NULL AND tool_calls IS NULL AND tool_call_id IS NULL)
) NOT VALID;

ALTER TABLE messages VALIDATE CONSTRAINT messages_role_or_item;

-- messages_content_null_only_with_tool_calls, now for chat rows only:
-- replaced in one statement (no moment without it), NOT VALID, then
-- validated.
ALTER TABLE messages
DROP CONSTRAINT IF EXISTS messages_content_null_only_with_tool_calls,
ADD CONSTRAINT messages_content_null_only_with_tool_calls
CHECK (role IS NULL OR content IS NOT NULL OR tool_calls IS NOT NULL) NOT VALID;

ALTER TABLE messages VALIDATE CONSTRAINT messages_content_null_only_with_tool_calls;

-- A key names one item (CHECK: only items have one), and the access path
-- to it (find_item_by_key, taken_item_keys in sql/items.sql). Partial:
-- only items that kept their own id. Built on a column that is NULL in
-- every existing row, so its uniqueness cannot fail the build. user_id is
-- in the key (a conversation has one owner, so it is as unique without
-- it) because Citus needs the distribution column in every unique index
-- (docs/scaling.md, tests/test_citus_ready.py); every lookup gives it.
ALTER TABLE messages
DROP CONSTRAINT IF EXISTS messages_item_key_only_on_items,
ADD CONSTRAINT messages_item_key_only_on_items
CHECK (item_key IS NULL OR item IS NOT NULL) NOT VALID;

ALTER TABLE messages VALIDATE CONSTRAINT messages_item_key_only_on_items;

DROP INDEX CONCURRENTLY IF EXISTS messages_item_key_idx;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS messages_item_key_idx
ON messages (conversation_id, user_id, item_key)
WHERE item_key IS NOT NULL;

RESET lock_timeout;

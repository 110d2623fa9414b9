-- Conversations: one row per chat, owned by one user.
-- Every query filters by user_id: another user's conversation does not exist.

-- name: create_conversation :one
-- The database assigns the id and the timestamps.
INSERT INTO conversations (user_id, title, metadata)
VALUES (:user_id, :title, :metadata)
RETURNING id, title, metadata, archived, message_count, created_at, updated_at;

-- name: get_conversation :one
-- By primary key; the owner filter turns another user's id into "not found".
SELECT id, title, metadata, archived, message_count, created_at, updated_at
FROM conversations
WHERE id = :id
    AND user_id = :user_id;

-- name: list_conversations_first :many
-- First page, newest activity first, of the archived conversations or of
-- the others (:archived); served in order by
-- conversations_user_archived_activity_idx (migrations/0011). The caller
-- asks for one row more than the page to learn whether a next page exists.
-- Empty metadata comes back as NULL, as on a page of messages
-- (list_messages_asc): no JSON decoder is called for it.
SELECT
    id, title, archived, message_count, created_at, updated_at,
    nullif(metadata, '{}') AS metadata
FROM conversations
WHERE user_id = :user_id
    AND archived = :archived
ORDER BY updated_at DESC, id DESC
LIMIT :limit;

-- name: list_conversations_after :many
-- Next pages: a keyset seek past the cursor's (updated_at, id), so the cost
-- of a page does not depend on how deep it is. A separate query from the
-- first page on purpose: "cursor IS NULL OR ..." would stop a generic plan
-- from using the row comparison as an index condition. Empty metadata as
-- NULL, as on the first page.
SELECT
    id, title, archived, message_count, created_at, updated_at,
    nullif(metadata, '{}') AS metadata
FROM conversations
WHERE user_id = :user_id
    AND archived = :archived
    AND (updated_at, id) < (:cursor_updated_at::timestamptz, :cursor_id::uuid)
ORDER BY updated_at DESC, id DESC
LIMIT :limit;

-- name: update_conversation :one
-- PATCH semantics: a field is replaced only when the caller sent it
-- (set_title / set_metadata / set_archived), so "title": null clears the
-- title while an absent title leaves it alone. metadata is replaced whole,
-- never merged. Archiving counts as activity: it moves updated_at, like
-- every change (so a conversation just archived is not the retention job's
-- next one).
-- updated_at never moves backwards, even against clock skew.
UPDATE conversations
SET
    title      = CASE WHEN :set_title::boolean THEN :title::text ELSE title END,
    metadata   = CASE WHEN :set_metadata::boolean THEN :metadata::jsonb ELSE metadata END,
    archived   = CASE WHEN :set_archived::boolean THEN :archived::boolean ELSE archived END,
    updated_at = greatest(updated_at, clock_timestamp())
WHERE id = :id
    AND user_id = :user_id
RETURNING id, title, metadata, archived, message_count, created_at, updated_at;

-- name: delete_conversation :execrows
-- Messages, their tool calls and the idempotency keys whose responses hold
-- any of it go with it (ON DELETE CASCADE, migrations/0002 and 0007).
DELETE FROM conversations
WHERE id = :id
    AND user_id = :user_id;

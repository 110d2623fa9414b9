-- transactional: false
-- A rollback drops what its migration created. Like the migration, each
-- statement gives up after 5 s waiting for a lock rather than queue every
-- reader of messages behind it (run it again then: every step can be).
-- Items without a chat-completions form (role NULL) are deleted with it:
-- without the item column they would be nothing. Items that have one stay,
-- as the chat-completions messages they also are.
-- squawk-ignore-file ban-drop-column
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction
-- squawk-ignore-file adding-not-nullable-field, constraint-missing-not-valid
-- squawk-ignore-file ban-drop-constraint

SET lock_timeout = '5s';

-- Their children are given their nearest ancestor that stays (walking up
-- through consecutive items), so the tree keeps its shape.
WITH RECURSIVE up AS (
    SELECT child.conversation_id, child.seq AS child_seq, child.parent_seq AS ancestor
    FROM messages AS child
    INNER JOIN messages AS parent
        ON child.conversation_id = parent.conversation_id
            AND child.parent_seq = parent.seq
    WHERE child.role IS NOT NULL
        AND parent.role IS NULL
    UNION ALL
    SELECT up.conversation_id, up.child_seq, parent.parent_seq AS ancestor
    FROM up
    INNER JOIN messages AS parent
        ON up.conversation_id = parent.conversation_id
            AND up.ancestor = parent.seq
    WHERE parent.role IS NULL
),

kept AS (
    -- The end of each walk: no parent, or one that stays.
    SELECT up.conversation_id, up.child_seq, up.ancestor
    FROM up
    WHERE up.ancestor IS NULL
        OR EXISTS (
            SELECT 1
            FROM messages AS m
            WHERE m.conversation_id = up.conversation_id
                AND m.seq = up.ancestor
                AND m.role IS NOT NULL
        )
)

UPDATE messages AS m
SET parent_seq = kept.ancestor
FROM kept
WHERE m.conversation_id = kept.conversation_id
    AND m.seq = kept.child_seq;

DELETE FROM messages
WHERE role IS NULL;

-- The counters of what is left.
UPDATE conversations AS c
SET message_count = (
    SELECT count(*)
    FROM messages AS m
    WHERE m.conversation_id = c.id
);

-- Active leaves that were deleted: the newest message still on the path.
UPDATE conversations AS c
SET
    tail_seq = coalesce((
        SELECT max(m.seq)
        FROM messages AS m
        WHERE m.conversation_id = c.id
            AND m.on_path
    ), 0)
WHERE NOT EXISTS (
        SELECT 1
        FROM messages AS m
        WHERE m.conversation_id = c.id
            AND m.seq = c.tail_seq
    );

ALTER TABLE messages
DROP CONSTRAINT IF EXISTS messages_content_null_only_with_tool_calls,
ADD CONSTRAINT messages_content_null_only_with_tool_calls
CHECK (content IS NOT NULL OR tool_calls IS NOT NULL);

ALTER TABLE messages
DROP CONSTRAINT IF EXISTS messages_role_or_item,
DROP CONSTRAINT IF EXISTS messages_item_is_object,
DROP CONSTRAINT IF EXISTS messages_item_key_only_on_items;

DROP INDEX CONCURRENTLY IF EXISTS messages_item_key_idx;

ALTER TABLE messages
ALTER COLUMN role SET NOT NULL;

ALTER TABLE messages
DROP COLUMN IF EXISTS item_key,
DROP COLUMN IF EXISTS item;

RESET lock_timeout;

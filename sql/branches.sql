-- Branches of a conversation (migrations/0012): a message's alternatives,
-- and which one the conversation shows (its active path).

-- name: list_siblings :many
-- The message :seq and its siblings (the messages with the same parent;
-- for a first message, the other first messages), oldest first, each with
-- whether it is on the active path. The conversation row comes first: no
-- row at all means the conversation is not the caller's, one row of NULL
-- message columns that :seq is not one of its messages. Siblings are found
-- by messages_parent_idx. Items without a chat-completions form (role NULL,
-- migrations/0013) are no messages: neither :seq nor a sibling.
SELECT
    c.id AS found,
    s.conversation_id, s.seq, s.parent_seq, s.role, s.content, s.name,
    s.tool_calls, s.tool_call_id, s.metadata, s.created_at, s.on_path
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT
        sibling.conversation_id, sibling.seq, sibling.parent_seq, sibling.role,
        sibling.content, sibling.name, sibling.tool_calls, sibling.tool_call_id,
        sibling.metadata, sibling.created_at, sibling.on_path
    FROM messages AS chosen
    INNER JOIN messages AS sibling
        ON chosen.conversation_id = sibling.conversation_id
            AND chosen.user_id = sibling.user_id
            AND (
                chosen.parent_seq = sibling.parent_seq
                OR (chosen.parent_seq IS NULL AND sibling.parent_seq IS NULL)
            )
    WHERE chosen.conversation_id = :conversation_id
        AND chosen.user_id = :user_id
        AND chosen.seq = :seq
        AND chosen.role IS NOT NULL
        AND sibling.role IS NOT NULL
) AS s ON TRUE
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
ORDER BY s.seq ASC;

-- name: switch_active_leaf :scalar
-- Makes the newest message below :seq (the highest seq of its subtree; :seq
-- itself when it has no children) the active leaf, after lock_conversation
-- in its transaction: the old path's messages leave the active path and the
-- new path's (the leaf's chain of parents) join it, in one statement.
-- Returns the new leaf; NULL when :seq is not a message of the caller's
-- conversation. Walks the subtree and the two paths: O(their size).
WITH RECURSIVE subtree AS (
    SELECT m.seq
    FROM messages AS m
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND m.seq = :seq
    UNION ALL
    SELECT child.seq
    FROM subtree
    INNER JOIN messages AS child
        ON subtree.seq = child.parent_seq
            AND child.conversation_id = :conversation_id
            AND child.user_id = :user_id
),

leaf AS (
    SELECT max(subtree.seq) AS seq
    FROM subtree
),

path AS (
    SELECT m.seq, m.parent_seq
    FROM messages AS m
    INNER JOIN leaf ON m.seq = leaf.seq
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
    UNION ALL
    SELECT parent.seq, parent.parent_seq
    FROM path
    INNER JOIN messages AS parent
        ON path.parent_seq = parent.seq
            AND parent.conversation_id = :conversation_id
            AND parent.user_id = :user_id
),

left_path AS (
    UPDATE messages AS m
    SET on_path = FALSE
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND m.on_path
        AND m.seq NOT IN (SELECT path.seq FROM path)
        AND EXISTS (SELECT 1 FROM path)
),

joined_path AS (
    UPDATE messages AS m
    SET on_path = TRUE
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND NOT m.on_path
        AND m.seq IN (SELECT path.seq FROM path)
),

moved AS (
    UPDATE conversations AS c
    SET tail_seq = leaf.seq
    FROM leaf
    WHERE c.id = :conversation_id
        AND c.user_id = :user_id
        AND leaf.seq IS NOT NULL
    RETURNING c.tail_seq
)

SELECT moved.tail_seq
FROM moved;

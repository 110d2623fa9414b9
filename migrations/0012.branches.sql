-- transactional: false
-- Branches (issue 14): edit-and-regenerate keeps the old answer.
--
-- Every message has a parent (parent_seq, NULL for a first message), so a
-- conversation is a tree; the conversation's active leaf is tail_seq (the
-- column expected_last_seq has always been compared with), and the active
-- path is the chain of parents from the root to it.
--
-- Why on_path rather than a depth per message: a child is always appended
-- after its parent, so its seq is higher, and along any path seq order IS
-- depth order. Marking the active path's messages (on_path) and indexing
-- only those (messages_active_path_idx, partial) lets every read of the
-- active path (list, history, export openai) keep the keyset it already
-- had, seq > after and seq < before in seq order, and read about a page of
-- index entries whatever the conversation's size or number of branches
-- (tests/test_sql.py proves it). The price is paid by writes that change
-- the path: a branching append clears on_path on the old path's suffix
-- after its parent, a switch clears the old path and marks the new one
-- (both O(path)), under the conversation's row lock. A plain append marks
-- its rows on_path and changes nothing else.
--
-- No foreign key from parent_seq: the writers keep it (an append's parent
-- is the leaf or a checked path message, a delete gives the children to the
-- deleted message's parent, a truncate deletes whole subtrees), and a
-- self-referencing key would have to be validated over every message.
--
-- Existing conversations become one linear branch: each message's parent
-- is the message before it, every message is on the active path, and the
-- active leaf stays tail_seq (the newest message).
--
-- Not transactional: the indexes are built CONCURRENTLY on a table that
-- already has rows (yoyo runs this file outside a transaction). Every step
-- can be run again: should one fail, rerunning the migration finishes it (a
-- concurrent build that failed leaves an INVALID index behind, so each is
-- dropped before it is built, as in 0011).
--
-- Run it with no older chatstore process writing: a message such a
-- process appends after the backfill below has no parent (a root), and
-- the first switch or branch would take everything before it off the
-- active path. `chatstore serve` applies migrations before it serves;
-- stop the old processes first (README, For DBAs).
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction
-- depends: 0011.conversation-lifecycle-indexes

SET lock_timeout = '5s';

-- NULL: a first message (a root). A constant default (on_path) is stored
-- in the catalog, not written to every row.
ALTER TABLE messages
ADD COLUMN IF NOT EXISTS parent_seq bigint,
ADD COLUMN IF NOT EXISTS on_path boolean NOT NULL DEFAULT TRUE;

-- One linear branch: the parent of a message is the message before it.
UPDATE messages AS m
SET parent_seq = linear.previous_seq
FROM (
    SELECT
        conversation_id,
        seq,
        lag(seq) OVER (PARTITION BY conversation_id ORDER BY seq) AS previous_seq
    FROM messages
) AS linear
WHERE m.conversation_id = linear.conversation_id
    AND m.seq = linear.seq
    AND linear.previous_seq IS NOT NULL
    AND m.parent_seq IS NULL;

-- Access path: a message's children (siblings listing, deletes that move
-- children to the deleted message's parent, a subtree's walk); a root's
-- siblings are the rows whose parent_seq IS NULL. parent_seq leads: every
-- lookup gives both columns, and an index led by conversation_id alone
-- would compete with messages_active_path_idx for the reads of a
-- conversation (the planner took it for a small one, and sorted).
DROP INDEX CONCURRENTLY IF EXISTS messages_parent_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_parent_idx
ON messages (parent_seq, conversation_id);

-- Access path: the active path in seq order (every read of a conversation).
-- user_id is a key column so that the owner filter of every read is an
-- index condition: with it only in the heap, the planner ANDed this index
-- with messages_search_idx (user_id, search_vector) and sorted the result
-- instead of walking this one in order and stopping after a page.
DROP INDEX CONCURRENTLY IF EXISTS messages_active_path_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_active_path_idx
ON messages (conversation_id, user_id, seq)
WHERE on_path;

RESET lock_timeout;

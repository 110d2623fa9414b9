-- Messages: the ordered history of one conversation, keyed by (conversation_id, seq).
--
-- Every write takes the conversation row first (UPDATE, or lock_conversation
-- in the same transaction), so writers to one conversation queue on that
-- single row lock, always in the same order, and cannot deadlock each other.

-- name: append_messages :many
-- Appends a batch (one message is a batch of one) in a single statement, so
-- an append is one round trip and all-or-nothing without a client-side
-- transaction. The batch arrives as parallel arrays, one element per message.
--
-- Branches (migrations/0012): the batch's first message is a child of
-- :parent_seq, or of the active leaf (tail_seq) when it is NULL; 0 starts a
-- new first message (a root). Each next message is a child of the one
-- before it, and the batch's last message becomes the active leaf: the
-- batch's messages join the active path (on_path). A plain append changes
-- no stored message's on_path (nothing on the path is after the leaf); a
-- branching append is followed, in its transaction, by leave_active_path
-- (the path's messages after the parent leave it), a statement of its own
-- so that this statement's generic plan costs what its custom plans cost
-- (as a part of it, a generic plan priced leaving the path of a whole
-- conversation, and PostgreSQL planned every append anew: about 0.5 ms of
-- server CPU each; tests/test_append_plans.py,
-- test_an_append_is_planned_once_per_connection_not_per_call).
--
-- The conversation row is locked first, then updated: that reserves seq
-- last_seq+1 .. last_seq+n and moves the counters. This statement judges
-- what that row decides, and writes nothing unless:
--   * the conversation exists and belongs to the caller;
--   * expected_last_seq, when given, is still the active leaf (tail_seq;
--     0 when empty);
--   * no other transaction holds the row (SKIP LOCKED): the statement never
--     waits for a lock, so a plain append holds its connection, and its
--     place among the process's append statements (chatstore/appends.py),
--     only for its own work. A row it locks is the newest version (READ
--     COMMITTED follows the row's updates), so the parent it takes from
--     tail_seq is the previous writer's last message.
-- When it does not match, nothing is written and no row comes back; the
-- store then takes the row lock in a transaction (lock_conversation, which
-- waits for the writer before it), judges why with diagnose_append, and
-- runs this statement again under that lock, which it already holds.
--
-- The rules that read the path are judged before it, by diagnose_append,
-- in the same transaction and after lock_conversation (chatstore/messages.py,
-- append_rows), so that nothing that changes the path can commit between
-- the judgement and this statement:
--   * :parent_seq, when given and not 0, is a message on the active path;
--   * every tool message answers a tool call of an assistant message on the
--     new message's path (an active-path message up to the parent), or of
--     an earlier message of this batch.
-- A batch with neither a parent nor a tool message cannot break them, and
-- stays this one statement. Judged here instead, as subqueries, they cost
-- every append the setting up of their plans, run or not: 167-170 µs of
-- executor time an append against 149-150 without them, and twice the
-- planning (BENCHMARKS.md, "Issue 11's targets: where met, and why not").
--
-- tool_calls, metadatas and items arrive as text[] of JSON documents: a
-- driver reads a Python list inside a list as one more array dimension.
--
-- Responses items (migrations/0013) are appended by this same statement,
-- under the same rules: :items holds each row's item (NULL for a
-- chat-completions message), and an item without a chat-completions form
-- has a NULL role (a function_call_output is a tool message, so its call_id
-- is checked as a tool_call_id is). :item_keys holds each item's key (its
-- own id when chatstore keeps it as the item's id, else NULL), chosen by
-- chatstore/items.py under the conversation's lock.
--
-- Live updates (migrations/0016): each row's followed says whether a
-- follower holds a lease on the conversation (followed_until, read on the
-- row locked FOR UPDATE below), and the caller announces the append after
-- its commit only then (chatstore/messages.py). No follower misses it: a
-- lease (follow_conversation) takes this same row lock. If this append
-- locked first, the lease waits for its commit and the follower's first
-- read, after the lease, sees the message; if the lease committed first,
-- FOR UPDATE returns the leased version of the row (READ COMMITTED locks
-- and returns the newest version of a row, not the snapshot's), so this
-- append sees the lease and is announced; while the lease holds the row,
-- this statement skips it, and the store runs it again once
-- lock_conversation has waited for the lease's commit.
WITH batch AS (
    SELECT
        b.ord, b.role, b.content, b.name, b.tool_calls, b.tool_call_id, b.metadata, b.item,
        b.item_key
    FROM unnest(
            :roles::text[],
            :contents::text[],
            :names::text[],
            :tool_calls::text[]::jsonb[],
            :tool_call_ids::text[],
            :metadatas::text[]::jsonb[],
            :items::text[]::jsonb[],
            :item_keys::text[]
        ) WITH ORDINALITY AS b (
            role, content, name, tool_calls, tool_call_id, metadata, item, item_key, ord
        )
),

locked AS (
    SELECT
        c.id,
        c.user_id,
        c.last_seq,
        c.tail_seq,
        coalesce(:parent_seq::bigint, c.tail_seq) AS parent_seq,
        coalesce(c.followed_until > now(), FALSE) AS followed
    FROM conversations AS c
    WHERE c.id = :conversation_id
        AND c.user_id = :user_id
    FOR UPDATE SKIP LOCKED
),

conversation AS (
    UPDATE conversations AS c
    SET
        last_seq      = locked.last_seq + cardinality(:roles::text[]),
        tail_seq      = locked.last_seq + cardinality(:roles::text[]),
        message_count = c.message_count + cardinality(:roles::text[]),
        updated_at    = greatest(c.updated_at, clock_timestamp())
    FROM locked
    -- The row by its key, as locked found it, not joined on locked's
    -- columns: on a small table (a new deployment, the benchmark's) the
    -- join was planned as a hash of the whole table, built on every
    -- append (tests/test_append_plans.py,
    -- test_an_append_updates_its_conversation_by_key_not_by_a_join).
    WHERE c.id = :conversation_id
        AND c.user_id = :user_id
        AND (:expected_last_seq::bigint IS NULL OR locked.tail_seq = :expected_last_seq::bigint)
    RETURNING
        c.id, c.user_id, locked.last_seq AS base_seq, locked.parent_seq, locked.followed
),

inserted AS (
    -- search_vector with the configured text-search configuration
    -- (migrations/0004.search.sql), over the message's first 50,000
    -- characters (chatstore_search_text, migrations/0009): a tsvector holds
    -- at most 1 MB, so a long message of distinct words would not fit, and
    -- the message is stored whole all the same.
    INSERT INTO messages
    (
        conversation_id, seq, user_id, role, content, name,
        tool_calls, tool_call_id, metadata, item, item_key, search_vector, parent_seq, on_path
    )
    SELECT
        conversation.id, conversation.base_seq + batch.ord AS seq, conversation.user_id,
        batch.role, batch.content, batch.name,
        batch.tool_calls, batch.tool_call_id, batch.metadata, batch.item, batch.item_key,
        to_tsvector(
            :search_config::regconfig, chatstore_search_text(batch.content)
        ) AS search_vector,
        CASE
            WHEN batch.ord = 1 THEN nullif(conversation.parent_seq, 0)
            ELSE conversation.base_seq + batch.ord - 1
        END AS parent_seq,
        TRUE AS on_path
    FROM conversation
    CROSS JOIN batch
    RETURNING
        conversation_id, seq, user_id, parent_seq, role, content, name,
        tool_calls, tool_call_id, metadata, item, item_key, created_at
),

calls AS (
    -- A reused call id within the conversation violates the primary key and
    -- fails the whole statement: a history with two answers to "call_1"
    -- is one that chat-completions APIs reject. Call ids are unique across
    -- all of a conversation's branches, so a tool message's call is always
    -- its own path's.
    INSERT INTO message_tool_calls (conversation_id, call_id, seq, user_id)
    SELECT
        inserted.conversation_id, tool_call.value ->> 'id' AS call_id, inserted.seq,
        inserted.user_id
    FROM inserted
    CROSS JOIN LATERAL jsonb_array_elements(inserted.tool_calls) AS tool_call (value)
    WHERE inserted.tool_calls IS NOT NULL
)

SELECT
    inserted.conversation_id, inserted.seq, inserted.parent_seq, inserted.role,
    inserted.content, inserted.name, inserted.tool_calls, inserted.tool_call_id,
    inserted.metadata, inserted.item, inserted.item_key, inserted.created_at,
    conversation.followed
FROM inserted
CROSS JOIN conversation
ORDER BY inserted.seq;

-- name: append_messages_together :many
-- Several plain appends, each to its own conversation, in one statement
-- (chatstore/appends.py gathers appends that arrive while one is under way):
-- each is what append_messages with no :parent_seq does to its conversation,
-- all commit together, and the statement's fixed costs (the round trip, the
-- executor's start, the commit and its WAL flush) are paid once for all of
-- them instead of once each. An append whose conversation is not its
-- caller's, or whose :expected_last_seq is no longer the leaf, gets no row
-- and writes nothing, as in append_messages; the others are written.
--
-- :conversation_ids, :user_ids and :expected_last_seqs hold one element per
-- append (its ordinal is the append's number), no conversation twice;
-- :appends (each message's append number), :positions (1, 2, ... within its
-- append) and the column arrays of append_messages one element per message,
-- an append's messages in order.
--
-- A conversation another transaction holds is skipped (SKIP LOCKED, as in
-- append_messages): its append gets no row, and its caller waits for the
-- lock on its own. The statement never waits for a row lock, so one busy
-- conversation never holds the appends gathered with it.
WITH appended AS (
    SELECT a.ord, a.conversation_id, a.user_id, a.expected_last_seq, a.message_count
    FROM unnest(
            :conversation_ids::uuid[],
            :user_ids::text[],
            :expected_last_seqs::bigint[],
            :message_counts::bigint[]
        ) WITH ORDINALITY AS a (conversation_id, user_id, expected_last_seq, message_count, ord)
),

batch AS (
    SELECT
        b.append, b.position, b.role, b.content, b.name, b.tool_calls, b.tool_call_id,
        b.metadata, b.item, b.item_key
    FROM unnest(
            :appends::bigint[],
            :positions::bigint[],
            :roles::text[],
            :contents::text[],
            :names::text[],
            :tool_calls::text[]::jsonb[],
            :tool_call_ids::text[],
            :metadatas::text[]::jsonb[],
            :items::text[]::jsonb[],
            :item_keys::text[]
        ) AS b (
            append, position, role, content, name, tool_calls, tool_call_id, metadata, item,
            item_key
        )
),

locked AS (
    SELECT
        c.id,
        c.user_id,
        c.last_seq,
        c.tail_seq,
        appended.ord AS append,
        appended.expected_last_seq,
        appended.message_count,
        coalesce(c.followed_until > now(), FALSE) AS followed
    FROM appended
    INNER JOIN conversations AS c
        ON appended.conversation_id = c.id
            AND appended.user_id = c.user_id
    FOR UPDATE OF c SKIP LOCKED
),

conversation AS (
    UPDATE conversations AS c
    SET
        last_seq      = locked.last_seq + locked.message_count,
        tail_seq      = locked.last_seq + locked.message_count,
        message_count = c.message_count + locked.message_count,
        updated_at    = greatest(c.updated_at, clock_timestamp())
    FROM locked
    WHERE c.id = locked.id
        AND c.user_id = locked.user_id
        AND (locked.expected_last_seq IS NULL OR locked.tail_seq = locked.expected_last_seq)
    RETURNING
        c.id, c.user_id, locked.append, locked.last_seq AS base_seq,
        locked.tail_seq AS parent_seq, locked.followed
),

inserted AS (
    -- search_vector as in append_messages.
    INSERT INTO messages
    (
        conversation_id, seq, user_id, role, content, name,
        tool_calls, tool_call_id, metadata, item, item_key, search_vector, parent_seq, on_path
    )
    SELECT
        conversation.id, conversation.base_seq + batch.position AS seq, conversation.user_id,
        batch.role, batch.content, batch.name,
        batch.tool_calls, batch.tool_call_id, batch.metadata, batch.item, batch.item_key,
        to_tsvector(
            :search_config::regconfig, chatstore_search_text(batch.content)
        ) AS search_vector,
        CASE
            WHEN batch.position = 1 THEN nullif(conversation.parent_seq, 0)
            ELSE conversation.base_seq + batch.position - 1
        END AS parent_seq,
        TRUE AS on_path
    FROM conversation
    INNER JOIN batch ON conversation.append = batch.append
    RETURNING
        conversation_id, seq, user_id, parent_seq, role, content, name,
        tool_calls, tool_call_id, metadata, item, item_key, created_at
),

calls AS (
    -- As in append_messages: a reused call id fails the whole statement
    -- (chatstore/appends.py then appends each alone, so that only the
    -- append that reused it is refused).
    INSERT INTO message_tool_calls (conversation_id, call_id, seq, user_id)
    SELECT
        inserted.conversation_id, tool_call.value ->> 'id' AS call_id, inserted.seq,
        inserted.user_id
    FROM inserted
    CROSS JOIN LATERAL jsonb_array_elements(inserted.tool_calls) AS tool_call (value)
    WHERE inserted.tool_calls IS NOT NULL
)

SELECT
    conversation.append,
    inserted.conversation_id, inserted.seq, inserted.parent_seq, inserted.role,
    inserted.content, inserted.name, inserted.tool_calls, inserted.tool_call_id,
    inserted.metadata, inserted.item, inserted.item_key, inserted.created_at,
    conversation.followed
FROM inserted
INNER JOIN conversation ON inserted.conversation_id = conversation.id
ORDER BY conversation.append, inserted.seq;

-- name: leave_active_path :execrows
-- After a branching append (append_messages with :parent_seq given, in the
-- transaction that locked the conversation first): the messages that were
-- on the active path after the new parent leave it, the batch just
-- appended (:first_new_seq and after) stays on it. Read from
-- messages_active_path_idx.
UPDATE messages AS m
SET on_path = FALSE
WHERE m.conversation_id = :conversation_id
    AND m.user_id = :user_id
    AND m.on_path
    AND m.seq > :parent_seq
    AND m.seq < :first_new_seq;

-- name: announce_messages :many
-- After an append has committed (never inside it): tells every process's
-- LISTEN connection that each conversation grew up to its seq, on channel
-- chatstore_messages, payload {"conversation_id", "seq"} (what the trigger
-- of migrations/0005 sent until 0014). NOTIFY holds PostgreSQL's one
-- notification-queue lock until its transaction's commit is over, and a
-- transaction that notifies gets a transaction id, so its commit writes
-- WAL: synchronous_commit off for this transaction alone (set_config's
-- third argument) makes that commit not wait for the WAL flush, so the lock
-- is held for microseconds, not for an fsync. Nothing is lost by it: a
-- notification is delivered once committed, and a crash before the flush
-- loses the listeners' connections too, which then re-read everything.
SELECT
    set_config('synchronous_commit', 'off', TRUE) AS synchronous_commit,
    pg_notify(
        'chatstore_messages',
        json_build_object('conversation_id', a.conversation_id, 'seq', a.seq)::text
    ) AS notified
FROM unnest(:conversation_ids::uuid[], :seqs::bigint[]) AS a (conversation_id, seq);

-- name: diagnose_append :one
-- Whether, and why not, a batch may be appended: before a branching append
-- or one with a tool message (after lock_conversation, in its transaction:
-- the judgement then holds until it commits), and after a plain
-- append_messages stored nothing. No row when the conversation is not the
-- caller's; tail_seq is what expected_last_seq is compared with;
-- parent_on_path whether :parent_seq (NULL: the leaf; 0: a new root) may be
-- a parent; known_call_ids are the tool_call_ids of the batch that the path
-- up to the parent does have (chatstore/messages.py, refusal, judges the
-- batch from them).
SELECT
    c.tail_seq,
    (
        coalesce(:parent_seq::bigint, c.tail_seq) IN (0, c.tail_seq)
        OR EXISTS (
            SELECT 1
            FROM messages AS parent
            WHERE parent.conversation_id = c.id
                AND parent.user_id = c.user_id
                AND parent.seq = :parent_seq::bigint
                AND parent.on_path
        )
    ) AS parent_on_path,
    ARRAY(
        SELECT stored_call.call_id
        FROM message_tool_calls AS stored_call
        INNER JOIN messages AS caller
            ON stored_call.conversation_id = caller.conversation_id
                AND stored_call.seq = caller.seq
                AND stored_call.user_id = caller.user_id
        WHERE stored_call.conversation_id = c.id
            AND stored_call.user_id = c.user_id
            AND stored_call.call_id = ANY(:tool_call_ids::text[])
            AND caller.on_path
            AND caller.seq <= coalesce(:parent_seq::bigint, c.tail_seq)
    ) AS known_call_ids
FROM conversations AS c
WHERE c.id = :conversation_id
    AND c.user_id = :user_id;

-- name: get_message :one
-- One message by its position; the owner filter makes another user's
-- message "not found", and so is an item without a chat-completions form
-- (role NULL, migrations/0013): it is no message.
SELECT
    conversation_id, seq, parent_seq, role, content, name,
    tool_calls, tool_call_id, metadata, created_at
FROM messages
WHERE conversation_id = :conversation_id
    AND user_id = :user_id
    AND seq = :seq
    AND role IS NOT NULL;

-- name: list_messages_asc :many
-- A page of the active path (on_path: the root to the active leaf, see
-- migrations/0012) in seq order between two exclusive bounds (the store
-- passes 0 and the largest bigint when the caller gives none), read from
-- messages_active_path_idx: messages of other branches are not in it, so a
-- page reads about :limit entries however many branches there are.
-- The conversation row comes first so that one round trip also tells an
-- empty conversation (one row of NULL message columns) from a missing or
-- foreign one (no row at all). The inner query filters by the parameters,
-- not by c.id: given the value, the planner walks the index in order and
-- stops after :limit rows, whatever the conversation's size (with c.id it
-- planned for an average conversation and sorted the whole of a big one).
-- Items without a chat-completions form (role NULL, migrations/0013) are
-- not messages: left out, as by every chat-completions read.
-- Empty metadata (most messages have none) comes back as NULL, which
-- models.message_json reads as {}: the driver then calls no JSON decoder
-- for it, which was ~20 µs of the client's ~230 for a page of 50.
SELECT
    c.id AS found,
    m.conversation_id, m.seq, m.parent_seq, m.role, m.content, m.name,
    m.tool_calls, m.tool_call_id, m.created_at,
    nullif(m.metadata, '{}') AS metadata
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT
        conversation_id, seq, parent_seq, role, content, name,
        tool_calls, tool_call_id, metadata, created_at
    FROM messages
    WHERE conversation_id = :conversation_id
        AND user_id = :user_id
        AND on_path
        AND seq > :after
        AND seq < :before
        AND role IS NOT NULL
    ORDER BY seq ASC
    LIMIT :limit
) AS m ON TRUE
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
ORDER BY m.seq ASC;

-- name: list_messages_desc :many
-- As list_messages_asc (empty metadata as NULL too), newest first: a
-- backward scan of messages_active_path_idx.
SELECT
    c.id AS found,
    m.conversation_id, m.seq, m.parent_seq, m.role, m.content, m.name,
    m.tool_calls, m.tool_call_id, m.created_at,
    nullif(m.metadata, '{}') AS metadata
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT
        conversation_id, seq, parent_seq, role, content, name,
        tool_calls, tool_call_id, metadata, created_at
    FROM messages
    WHERE conversation_id = :conversation_id
        AND user_id = :user_id
        AND on_path
        AND seq > :after
        AND seq < :before
        AND role IS NOT NULL
    ORDER BY seq DESC
    LIMIT :limit
) AS m ON TRUE
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
ORDER BY m.seq DESC;

-- name: limit_lock_wait :scalar
-- For a writer that waited in line for its conversation in the process
-- (chatstore/writers.py): its wait for the row lock gets only what is left
-- of the time a writer may wait in all (acquire timeout + statement
-- timeout), so that the line adds nothing to that bound. This transaction
-- only (set_config's is_local, as SET LOCAL; a startup parameter could not
-- pass PgBouncer in transaction mode).
SELECT set_config('lock_timeout', :lock_timeout, TRUE) AS lock_timeout;

-- name: lock_conversation :scalar
-- First statement of a delete's transaction: takes the conversation row
-- lock, as every writer does first. The delete that follows is a statement
-- of its own so that its snapshot is taken after the lock is granted and
-- sees whatever the writer before it committed. NULL: not the caller's.
SELECT c.id
FROM conversations AS c
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
FOR UPDATE;

-- name: delete_message :execrows
-- Deletes one message (after lock_conversation, in its transaction) and
-- moves the counters by what was really deleted; its seq is never reused.
-- Its children are adopted by its parent (in a linear conversation: the
-- message is taken out of the line, as before branches), so deleting one
-- message never deletes another. When it was the active leaf, its parent
-- becomes the leaf; otherwise the active path stays what it was, less it.
-- :any_row: the items API (chatstore/items.py) deletes any row; the
-- messages API only messages (an item without a chat-completions form,
-- role NULL, is not found there).
WITH deleted AS (
    DELETE FROM messages AS m
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND m.seq = :seq
        AND (m.role IS NOT NULL OR :any_row::boolean)
    RETURNING m.seq, m.parent_seq
),

adopted AS (
    UPDATE messages AS child
    SET parent_seq = deleted.parent_seq
    FROM deleted
    WHERE child.conversation_id = :conversation_id
        AND child.user_id = :user_id
        AND child.parent_seq = deleted.seq
)

UPDATE conversations AS c
SET
    message_count = c.message_count - (SELECT count(*) FROM deleted),
    tail_seq      = CASE
        WHEN c.tail_seq = :seq THEN coalesce((SELECT deleted.parent_seq FROM deleted), 0)
        ELSE c.tail_seq
    END,
    updated_at    = greatest(c.updated_at, clock_timestamp())
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
    AND EXISTS (SELECT 1 FROM deleted);

-- name: truncate_messages :scalar
-- Edit-and-regenerate without keeping the old answer: deletes the active
-- path from its first message with seq >= from_seq, with every message
-- below it (other branches growing from that suffix go too), after
-- lock_conversation in its transaction, and returns how many went. The
-- message before the cut becomes the active leaf (0 if none); branches
-- growing from earlier messages are kept.
WITH RECURSIVE cut AS (
    SELECT m.seq, m.parent_seq
    FROM messages AS m
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND m.on_path
        AND m.seq >= :from_seq
    ORDER BY m.seq ASC
    LIMIT 1
),

subtree AS (
    SELECT cut.seq
    FROM cut
    UNION ALL
    SELECT child.seq
    FROM subtree
    INNER JOIN messages AS child
        ON subtree.seq = child.parent_seq
            AND child.conversation_id = :conversation_id
            AND child.user_id = :user_id
),

deleted AS (
    DELETE FROM messages AS m
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND m.seq IN (SELECT subtree.seq FROM subtree)
    RETURNING m.seq
),

counted AS (
    UPDATE conversations AS c
    SET
        message_count = c.message_count - (SELECT count(*) FROM deleted),
        tail_seq      = coalesce((SELECT cut.parent_seq FROM cut), 0),
        updated_at    = greatest(c.updated_at, clock_timestamp())
    WHERE c.id = :conversation_id
        AND c.user_id = :user_id
        AND EXISTS (SELECT 1 FROM deleted)
)

SELECT count(*)
FROM deleted;

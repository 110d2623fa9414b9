-- Export of a whole conversation, a page at a time, inside one read-only
-- REPEATABLE READ transaction: every page reads the same snapshot, so the
-- export is the conversation as it was when it began, however long it takes.
--
-- Pages are bounded in bytes, not rows: a FETCH of 1,000 rows is a few
-- hundred kilobytes of short messages but a gigabyte of 1M-character ones.
-- The database adds up the rows' sizes as it reads them and ends the page
-- at the budget, so the process never holds more than the budget of rows
-- (or one row, when a single row is larger). Keyset pages over a range of
-- seqs rather than a cursor: a cursor can only FETCH a count of rows.

-- name: limit_export_idle :scalar
-- A backstop on this transaction only (set_config's is_local, as SET LOCAL;
-- a startup parameter could not pass PgBouncer in transaction mode): should
-- the process stop sending without ending the transaction, PostgreSQL ends
-- the session after this long idle in it, and the connection with it.
SELECT set_config('idle_in_transaction_session_timeout', :timeout_ms, TRUE) AS idle_timeout;

-- name: export_last_seq :scalar
-- No message of the conversation has a higher seq than last_seq (it never
-- goes down): where the pages end. NULL when the conversation is gone.
SELECT c.last_seq
FROM conversations AS c
WHERE c.id = :conversation_id
    AND c.user_id = :user_id;

-- name: export_page :many
-- The messages with seq in (:after, :after + :span], in seq order
-- (messages_pkey), as many as fit in :max_bytes (at least one). The seq
-- range, not a LIMIT, bounds what a page reads: at most :span rows whatever
-- plan the planner picks (with the statistics of a table that has just
-- grown tenfold it sorts what it reads, and a page reading "every row after
-- :after" made the export quadratic). The caller keeps :span near what the
-- last page returned, so pages of huge rows do not each size up a thousand
-- rows to return one.
-- row_bytes is the row's share of the budget: the text of each variable
-- column, plus 64 for the fixed ones. Sizing reads no content: octet_length
-- of a TOASTed text reads its header only, and rows past the budget are
-- never detoasted. answerable: whether a tool message answers a tool call
-- still stored before it (the openai format leaves out those that do not,
-- which chat-completions APIs would refuse), worked out for returned rows only.
-- Both formats export the active path (on_path, migrations/0012): what the
-- conversation shows and a model is shown, and what an import rebuilds
-- (a linear conversation). Both are chat-completions messages: items
-- without that form (role NULL, migrations/0013) are left out.
SELECT
    page.conversation_id, page.seq, page.parent_seq, page.role, page.content, page.name,
    page.tool_calls, page.tool_call_id, page.metadata, page.created_at,
    page.row_bytes,
    (page.role <> 'tool' OR EXISTS (
        SELECT 1
        FROM message_tool_calls AS calls
        WHERE calls.conversation_id = page.conversation_id
            AND calls.call_id = page.tool_call_id
            AND calls.user_id = :user_id
            AND calls.seq < page.seq
    )) AS answerable
FROM (
    SELECT
        m.conversation_id, m.seq, m.parent_seq, m.role, m.content, m.name,
        m.tool_calls, m.tool_call_id, m.metadata, m.created_at,
        sized.row_bytes,
        sum(sized.row_bytes) OVER running AS running_bytes,
        row_number() OVER running AS row_position
    FROM messages AS m
    CROSS JOIN
        LATERAL (
            SELECT
                64::bigint
                + coalesce(octet_length(m.content), 0)
                + coalesce(octet_length(m.name), 0)
                + coalesce(octet_length(m.tool_calls::text), 0)
                + coalesce(octet_length(m.tool_call_id), 0)
                + octet_length(m.metadata::text) AS row_bytes
        ) AS sized
    WHERE m.conversation_id = :conversation_id
        AND m.user_id = :user_id
        AND m.on_path
        AND m.seq > :after
        AND m.seq <= :after + :span
        AND m.role IS NOT NULL
    WINDOW running AS (ORDER BY m.seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
) AS page
WHERE page.running_bytes <= :max_bytes OR page.row_position = 1
ORDER BY page.seq;

-- Export of a whole conversation through a server-side cursor, so that a
-- million messages stream in constant memory on both sides.
--
-- The cursor is declared in SQL (DECLARE ... CURSOR, then FETCH) inside one
-- transaction, rather than through the driver's protocol-level cursor: the
-- driver names its statement per process, and behind a transaction-mode
-- pooler (PgBouncer, Neon) that name outlives the transaction on a server
-- connection shared with other processes, where it collides.

-- name: declare_export_cursor :exec
-- Every message of the conversation in seq order (messages_pkey), with
-- whether a tool message answers a tool call still stored before it: the
-- openai format leaves out tool messages whose assistant message is gone,
-- which chat-completions APIs would refuse. NO SCROLL: read once, forward.
DECLARE chatstore_export NO SCROLL CURSOR FOR
SELECT m.conversation_id, m.seq, m.role, m.content, m.name,
       m.tool_calls, m.tool_call_id, m.metadata, m.created_at,
       (m.role <> 'tool' OR EXISTS (
           SELECT 1
           FROM message_tool_calls AS calls
           WHERE calls.conversation_id = m.conversation_id
             AND calls.call_id = m.tool_call_id
             AND calls.seq < m.seq
       )) AS answerable
FROM messages AS m
WHERE m.conversation_id = :conversation_id
  AND m.user_id = :user_id
ORDER BY m.seq;

-- name: fetch_export_cursor :many
-- The next rows of declare_export_cursor's cursor, in its transaction; fewer
-- than 1000 means the end. The batch size is the export's memory bound.
FETCH FORWARD 1000 FROM chatstore_export;

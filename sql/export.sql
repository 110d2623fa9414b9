-- Export of a whole conversation, read through a server-side cursor so that
-- a million messages stream in constant memory.

-- name: export_messages :many
-- Every message of the conversation in seq order (messages_pkey), with
-- whether a tool message answers a tool call still stored before it: the
-- openai format leaves out tool messages whose assistant message is gone,
-- which chat-completions APIs would refuse.
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

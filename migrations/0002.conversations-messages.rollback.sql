-- Rollback of 0002: drops the chat data (indexes go with their tables).
-- A rollback drops what its migration created, and an operator runs it on
-- purpose: it waits for its locks rather than give up half-way through a
-- deliberate undo.
-- squawk-ignore-file ban-drop-table, require-lock-timeout

DROP TABLE message_tool_calls;
DROP TABLE messages;
DROP TABLE conversations;

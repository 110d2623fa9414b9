-- Rollback of 0002: drops the chat data (indexes go with their tables).
DROP TABLE message_tool_calls;
DROP TABLE messages;
DROP TABLE conversations;

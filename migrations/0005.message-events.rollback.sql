DROP TRIGGER messages_notify_appended ON messages;
DROP FUNCTION chatstore_notify_messages();

DROP TRIGGER session_notify_changed ON "session";
DROP TRIGGER session_notify_deleted ON "session";
DROP FUNCTION chatstore_notify_session_revoked();

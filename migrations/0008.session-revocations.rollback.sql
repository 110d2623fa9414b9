-- A rollback drops what its migration created, and an operator runs it on
-- purpose: it waits for its locks rather than give up half-way through a
-- deliberate undo.
-- squawk-ignore-file ban-drop-function, require-lock-timeout

DROP TRIGGER session_notify_changed ON "session";
DROP TRIGGER session_notify_deleted ON "session";
DROP FUNCTION chatstore_notify_session_revoked();

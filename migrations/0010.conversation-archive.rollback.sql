-- A rollback drops what its migration created, and an operator runs it on
-- purpose: it waits for its locks rather than give up half-way through a
-- deliberate undo.
-- squawk-ignore-file ban-drop-column, require-lock-timeout

ALTER TABLE conversations
    DROP COLUMN archived;

-- Back to announcing every append: without followed_until, append_messages
-- of before 0016 announces each append whoever follows.
-- A rollback drops what its migration created, and an operator runs it on
-- purpose: it waits for its locks rather than give up half-way through a
-- deliberate undo.
-- squawk-ignore-file ban-drop-column, require-lock-timeout

ALTER TABLE conversations
    DROP COLUMN followed_until;

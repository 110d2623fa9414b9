-- btree_gin stays: another schema object may use it, and it is harmless.
-- A rollback drops what its migration created, and an operator runs it on
-- purpose: it waits for its locks rather than give up half-way through a
-- deliberate undo.
-- squawk-ignore-file ban-drop-column, require-lock-timeout, require-concurrent-index-deletion

DROP INDEX messages_search_idx;
ALTER TABLE messages DROP COLUMN search_vector;

-- A rollback drops what its migration created, and an operator runs it on
-- purpose: it waits for its locks rather than give up half-way through a
-- deliberate undo.
-- squawk-ignore-file ban-drop-table, require-lock-timeout

DROP TABLE idempotency_keys;

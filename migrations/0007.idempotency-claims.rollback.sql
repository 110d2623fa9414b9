-- A rollback drops what its migration created, and an operator runs it on
-- purpose: it waits for its locks rather than give up half-way through a
-- deliberate undo.
-- squawk-ignore-file ban-drop-column, ban-drop-constraint
-- squawk-ignore-file require-lock-timeout, require-concurrent-index-deletion

-- Pending claims mean nothing to the code before 0007 (it never commits a
-- key without its response): they go first.
DELETE FROM idempotency_keys
WHERE status IS NULL;

DROP INDEX idempotency_keys_conversation_idx;

ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_seqs_range,
    DROP CONSTRAINT idempotency_keys_conversation_fkey,
    DROP COLUMN last_seq,
    DROP COLUMN first_seq,
    DROP COLUMN conversation_id,
    DROP COLUMN claim_token;

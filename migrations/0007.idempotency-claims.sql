-- Idempotency keys that can be claimed without holding a transaction open,
-- and that go with the content they replay.
--
-- claim_token: a chat message's work (the responder) runs outside any
-- transaction, so its key is committed as a pending claim first (status
-- NULL, expires_at = the claim's lease) and completed later by the claimer
-- only: the token says whose claim it is, so a claimer whose lease ran out
-- and was taken over can never complete (or release) the new claimer's key.
--
-- conversation_id, first_seq, last_seq: what a completed key's response
-- holds copies of: its conversation (title, metadata) and the seqs of the
-- messages in it (NULL when it holds none, as a conversation's creation).
-- Deleting the conversation deletes the key (ON DELETE CASCADE); a message
-- delete or truncate deletes the keys holding a deleted seq in its own
-- transaction. A stored response never keeps a copy of deleted content,
-- and a repeat after the delete is new work.
-- depends: 0006.search-index-no-pending-list

-- Give up rather than queue: while the ALTER waits for its lock on
-- idempotency_keys (and the foreign key's on conversations), every chat
-- request with an Idempotency-Key would queue behind it.
SET LOCAL lock_timeout = '5s';

-- The columns are new, so every row holds NULL in them: the foreign key and
-- the check have nothing to verify, and their scan reads idempotency_keys
-- (keys live 24 hours, then are purged: a small table) under the lock the
-- ALTER holds anyway. NOT VALID plus VALIDATE would only split that no-op.
ALTER TABLE idempotency_keys
    ADD COLUMN claim_token uuid,
    ADD COLUMN conversation_id uuid,
    ADD COLUMN first_seq bigint,
    ADD COLUMN last_seq bigint,
    -- squawk-ignore constraint-missing-not-valid, adding-foreign-key-constraint
    ADD CONSTRAINT idempotency_keys_conversation_fkey
        FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE,
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT idempotency_keys_seqs_range
        CHECK ((first_seq IS NULL) = (last_seq IS NULL) AND first_seq <= last_seq);

-- Access path: the cascade of a conversation delete and the delete of the
-- keys holding deleted messages find a conversation's keys here, not by a
-- scan of every user's keys. Keys of no conversation (pending claims) are
-- left out. Not CONCURRENTLY: conversation_id was added just above, NULL on
-- every row, so the build indexes no row, reads a small table, and runs
-- under the ALTER's lock, held to commit in any case.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX idempotency_keys_conversation_idx
    ON idempotency_keys (conversation_id)
    WHERE conversation_id IS NOT NULL;

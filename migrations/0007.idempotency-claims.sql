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

ALTER TABLE idempotency_keys
    ADD COLUMN claim_token uuid,
    ADD COLUMN conversation_id uuid,
    ADD COLUMN first_seq bigint,
    ADD COLUMN last_seq bigint,
    ADD CONSTRAINT idempotency_keys_conversation_fkey
        FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE,
    ADD CONSTRAINT idempotency_keys_seqs_range
        CHECK ((first_seq IS NULL) = (last_seq IS NULL) AND first_seq <= last_seq);

-- Access path: the cascade of a conversation delete and the delete of the
-- keys holding deleted messages find a conversation's keys here, not by a
-- scan of every user's keys. Keys of no conversation (pending claims) are
-- left out.
CREATE INDEX idempotency_keys_conversation_idx
    ON idempotency_keys (conversation_id)
    WHERE conversation_id IS NOT NULL;

-- Idempotency keys that can be claimed without holding a transaction open,
-- and that go with the content they replay.
--
-- claim_token: a chat message's work (the responder) runs outside any
-- transaction, so its key is committed as a pending claim first (status
-- NULL, expires_at = the claim's lease) and completed later by the claimer
-- only: the token says whose claim it is, so a claimer whose lease ran out
-- and was taken over can never complete (or release) the new claimer's key.
--
-- conversation_id: the conversation a completed key's response belongs to
-- (its messages, its title). Deleting the conversation deletes the key with
-- it (ON DELETE CASCADE), and a message delete or truncate deletes the
-- conversation's keys in its own transaction: a stored response never keeps
-- a copy of deleted content, and a repeat after the delete is new work.
-- depends: 0006.search-index-no-pending-list

ALTER TABLE idempotency_keys
    ADD COLUMN claim_token uuid,
    ADD COLUMN conversation_id uuid,
    ADD CONSTRAINT idempotency_keys_conversation_fkey
        FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE;

-- Access path: the cascade of a conversation delete and the delete of a
-- conversation's keys after a message delete or truncate find its keys here,
-- not by a scan of every user's keys. Pending and conversation-less keys
-- (none yet) are left out.
CREATE INDEX idempotency_keys_conversation_idx
    ON idempotency_keys (conversation_id)
    WHERE conversation_id IS NOT NULL;

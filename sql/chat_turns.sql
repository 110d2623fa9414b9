-- Idempotency keys of chat turns (chatstore/chat_turn.py), on the rows of
-- idempotency_keys (migrations/0003, 0007; sql/idempotency.sql).
--
-- A chat turn stores the user's message (committed) before the model is
-- asked, and its reply once the model is done. With an Idempotency-Key, the
-- pending claim remembers the stored user message (first_seq = last_seq =
-- its seq, with its conversation_id) in the transaction that stores it. If
-- the model fails, the claim is let go but kept (claim_token NULL, status
-- NULL, for the key's 24 hours): a retry with the key claims it again and
-- finds the seq, so it asks the model again for that message instead of
-- storing it twice. Deleting the message (or its conversation) deletes the
-- key as for a completed one: a retry is then new work.

-- name: claim_chat_idempotency_key :one
-- As claim_idempotency_key, and also takes over a key let go by a failed
-- turn of the same request. A row means the caller now holds the key and
-- must do the work; its user_seq is the user message an earlier attempt of
-- this request stored (NULL: none yet). No row: the key is held, pending or
-- completed (ask get_idempotency_key). The remembered message is kept only
-- for the same request (fingerprint) and only while the key is uncompleted.
INSERT INTO idempotency_keys AS k
(user_id, key, fingerprint, claim_token, expires_at)
VALUES
(:user_id, :key, :fingerprint, :token, now() + make_interval(secs => :lease_seconds))
ON CONFLICT (user_id, key) DO UPDATE
    SET fingerprint = excluded.fingerprint,
        claim_token = excluded.claim_token,
        status = NULL,
        response = NULL,
        conversation_id = CASE WHEN k.status IS NULL AND k.fingerprint = excluded.fingerprint
            THEN k.conversation_id
        END,
        first_seq = CASE WHEN k.status IS NULL AND k.fingerprint = excluded.fingerprint
            THEN k.first_seq
        END,
        last_seq = CASE WHEN k.status IS NULL AND k.fingerprint = excluded.fingerprint
            THEN k.last_seq
        END,
        created_at = now(),
        expires_at = excluded.expires_at
    WHERE k.expires_at <= now()
    OR (k.status IS NULL AND k.claim_token IS NULL AND k.fingerprint = excluded.fingerprint)
RETURNING k.first_seq AS user_seq;

-- name: remember_chat_user_message :scalar
-- In the transaction that stores the turn's user message, after
-- hold_idempotency_claim: the pending claim now holds that message. NULL:
-- the claim is not this holder's.
UPDATE idempotency_keys
SET
    conversation_id = :conversation_id,
    first_seq       = :seq,
    last_seq        = :seq
WHERE user_id = :user_id
    AND key = :key
    AND claim_token = :token
    AND status IS NULL
RETURNING TRUE;

-- name: let_go_chat_idempotency_key :execrows
-- The model failed after the user message was stored: the claim is let go
-- (no holder) but kept with the message's seq for the key's 24 hours, so a
-- retry reuses the message. 0: nothing was stored yet (or the claim is no
-- longer this holder's): release_idempotency_claim deletes it instead.
UPDATE idempotency_keys
SET
    claim_token = NULL,
    expires_at  = now() + make_interval(secs => :ttl_seconds)
WHERE user_id = :user_id
    AND key = :key
    AND claim_token = :token
    AND status IS NULL
    AND first_seq IS NOT NULL;

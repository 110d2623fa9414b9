-- Idempotency keys (migrations/0003, 0007).
--
-- A key is claimed (a row with status NULL, its claim_token and a lease in
-- expires_at) and completed by its claimer (status, response, what the
-- response holds copies of, and 24 hours in expires_at). Two
-- ways to run the work between (chatstore/idempotency.py):
--   * short work runs inside the claim's transaction: the claim, the work
--     and the response commit or vanish together;
--   * a chat turn's work (the model) runs with no transaction open: the
--     claim commits alone, a short transaction stores the user's message and
--     remembers its seq on the claim, the model runs, then one transaction
--     re-takes the claim (hold_idempotency_claim), stores the reply and
--     completes the key; a failure lets the key go but keeps the stored
--     message for the retry (sql/chat_turns.sql, chatstore/chat_turn.py).
-- A claim whose lease runs out (its holder died) is taken over by the next
-- claim of the key, exactly like a key past its 24 hours.

-- name: claim_idempotency_key :scalar
-- Claims the key for this request. Returns true when the caller must do the
-- work; NULL when the key is held, pending or completed (then ask
-- get_idempotency_key). A concurrent claim of the same key waits here on the
-- row until the transaction that holds it ends: exactly-once across
-- processes. A key past its expires_at (a completed key's 24 hours or a
-- pending claim's lease) is taken over in place, with a new token.
INSERT INTO idempotency_keys AS k (user_id, key, fingerprint, claim_token, expires_at)
VALUES (:user_id, :key, :fingerprint, :token, now() + make_interval(secs => :lease_seconds))
ON CONFLICT (user_id, key) DO UPDATE
    SET
        fingerprint = excluded.fingerprint,
        claim_token = excluded.claim_token,
        status = NULL,
        response = NULL,
        conversation_id = NULL,
        first_seq = NULL,
        last_seq = NULL,
        created_at = now(),
        expires_at = excluded.expires_at
    WHERE k.expires_at <= now()
RETURNING TRUE;

-- name: get_idempotency_key :one
-- The holder's fingerprint and, once completed, its response: a replay, a
-- conflict, or (status NULL) a claim still pending.
SELECT fingerprint, status, response
FROM idempotency_keys
WHERE user_id = :user_id
    AND key = :key
    AND expires_at > now();

-- name: renew_idempotency_claim :execrows
-- Extends a pending claim's lease while its holder is alive and working
-- (the responder may take longer than one lease). 0: the claim is no longer
-- this holder's.
UPDATE idempotency_keys
SET expires_at = now() + make_interval(secs => :lease_seconds)
WHERE user_id = :user_id
    AND key = :key
    AND claim_token = :token
    AND status IS NULL;

-- name: hold_idempotency_claim :scalar
-- First statement of the transaction that stores a chat message's work:
-- locks the claim if it is still this holder's, so that no one can take it
-- over until the work and the response commit. NULL: it was taken over
-- (the lease ran out) and the work must not be stored.
SELECT TRUE
FROM idempotency_keys
WHERE user_id = :user_id
    AND key = :key
    AND claim_token = :token
    AND status IS NULL
FOR UPDATE;

-- name: record_idempotency_response :scalar
-- Completes the claim, in the work's own transaction: the response to
-- replay for 24 hours, the conversation it belongs to and the seqs of the
-- messages it holds (deleting any of them deletes the key). NULL: the claim
-- is not this holder's.
UPDATE idempotency_keys
SET
    status          = :status,
    response        = :response,
    conversation_id = :conversation_id,
    first_seq       = :first_seq,
    last_seq        = :last_seq,
    expires_at      = now() + make_interval(secs => :ttl_seconds)
WHERE user_id = :user_id
    AND key = :key
    AND claim_token = :token
    AND status IS NULL
RETURNING TRUE;

-- name: release_idempotency_claim :exec
-- The work failed: the pending claim goes, so a retry does the work afresh.
-- Only this holder's claim, and never a completed key.
DELETE FROM idempotency_keys
WHERE user_id = :user_id
    AND key = :key
    AND claim_token = :token
    AND status IS NULL;

-- name: delete_idempotency_keys_holding_messages :exec
-- After a message delete (first_seq = last_seq = its seq) or a truncate
-- (from_seq up to the largest bigint), in its transaction: the keys whose
-- responses hold any deleted message go, so no copy of it is left to replay
-- and a repeat of such a key is new work. Keys of the conversation holding
-- other messages, or none (its creation), stay. Read from
-- idempotency_keys_conversation_idx: a conversation has few keys.
DELETE FROM idempotency_keys
WHERE user_id = :user_id
    AND conversation_id = :conversation_id
    AND first_seq <= :last_seq
    AND last_seq >= :first_seq;

-- name: purge_expired_idempotency_keys :execrows
-- A bounded batch of expired keys (and of pending claims whose holder died),
-- oldest first, read from idempotency_keys_expires_idx; SKIP LOCKED so that
-- purgers on several processes never queue behind each other or behind a
-- claim.
DELETE FROM idempotency_keys
WHERE
    (user_id, key) IN (
        SELECT user_id, key
        FROM idempotency_keys
        WHERE expires_at <= now()
        ORDER BY expires_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    );

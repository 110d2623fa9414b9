-- Idempotency keys (migrations/0003). All three run inside the transaction
-- that does the work, so the claim and the work commit or vanish together.

-- name: claim_idempotency_key :scalar
-- Claims the key for this request. Returns true when the caller must do the
-- work; NULL when the key is already held by a committed request (then ask
-- get_idempotency_key). A concurrent claim of the same key waits here on the
-- primary key until the first transaction ends: exactly-once across processes.
-- An expired key is taken over in place.
INSERT INTO idempotency_keys AS k
    (user_id, key, fingerprint, expires_at)
VALUES
    (:user_id, :key, :fingerprint, now() + make_interval(secs => :ttl_seconds))
ON CONFLICT (user_id, key) DO UPDATE
SET fingerprint = excluded.fingerprint,
    status      = NULL,
    response    = NULL,
    created_at  = now(),
    expires_at  = excluded.expires_at
WHERE k.expires_at <= now()
RETURNING true;

-- name: get_idempotency_key :one
-- The first request's fingerprint and response, for a replay or a conflict.
SELECT fingerprint, status, response
FROM idempotency_keys
WHERE user_id = :user_id
  AND key = :key
  AND expires_at > now();

-- name: record_idempotency_response :exec
-- Stores the response to replay, in the work's own transaction.
UPDATE idempotency_keys
SET status = :status,
    response = :response
WHERE user_id = :user_id
  AND key = :key;

-- name: purge_expired_idempotency_keys :execrows
-- A bounded batch of expired keys, oldest first, read from
-- idempotency_keys_expires_idx; SKIP LOCKED so that purgers on several
-- processes never queue behind each other or behind a claim.
DELETE FROM idempotency_keys
WHERE (user_id, key) IN (
    SELECT user_id, key
    FROM idempotency_keys
    WHERE expires_at <= now()
    ORDER BY expires_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
);

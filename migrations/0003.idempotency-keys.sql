-- Idempotency keys: a POST repeated with the same Idempotency-Key within
-- 24 hours replays the first response instead of storing the work again.
-- The row is claimed in the same transaction as the work, so a concurrent
-- repeat (on any server process) waits on the row and then replays it.
-- depends: 0002.conversations-messages

-- Already applied on users' databases, so not edited to satisfy squawk (see
-- .squawk.toml); the rules it breaks, and why that was safe:
-- squawk-ignore-file require-lock-timeout
-- (the new table's foreign key locks "user" for an instant)
-- squawk-ignore-file prefer-bigint-over-int
-- (status is an HTTP status code)

CREATE TABLE idempotency_keys (
    user_id     text        NOT NULL,
    key         text        NOT NULL,
    -- SHA-256 of what was asked (method, path, body): the same key with a
    -- different request is a conflict, not a replay.
    fingerprint bytea       NOT NULL,
    status      integer,
    response    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,

    -- Access path: the claim and the replay look a key up by owner and key.
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (user_id, key),
    CONSTRAINT idempotency_keys_user_fkey
        FOREIGN KEY (user_id) REFERENCES "user" (id) ON DELETE CASCADE,
    CONSTRAINT idempotency_keys_key_printable
        CHECK (key ~ '^[\x20-\x7e]{1,255}$'),
    CONSTRAINT idempotency_keys_fingerprint_sha256
        CHECK (octet_length(fingerprint) = 32)
);

-- Access path: the purge of expired keys takes the oldest first, a bounded
-- batch at a time, never a scan of the table.
CREATE INDEX idempotency_keys_expires_idx
    ON idempotency_keys (expires_at);

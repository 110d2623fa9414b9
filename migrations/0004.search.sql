-- Full-text search over a user's own messages.
--
-- The tsvector is computed at append time with the configured text-search
-- configuration (CHATSTORE_SEARCH_CONFIG, default 'simple', which works for
-- every language) and stored, so the configuration is a setting rather than
-- part of the index definition.
--
-- The index is a GIN over (user_id, search_vector) (btree_gin gives GIN a
-- btree-like operator class for text): one index scan answers "this user's
-- messages matching these words", and GIN's AND-scan skips through the long
-- posting lists of common words guided by the user's own, so a user's search
-- does not cost in proportion to everyone's messages.
-- depends: 0003.idempotency-keys

-- Already applied on users' databases, so not edited to satisfy squawk (see
-- .squawk.toml); the rules it breaks, and why that was safe:
-- squawk-ignore-file require-lock-timeout, require-concurrent-index-creation
-- (the backfill and the index build block writes to messages while they
-- run: on a database that already held many messages, 0004 wanted a quiet
-- moment; a first install runs it on an empty table)

CREATE EXTENSION IF NOT EXISTS btree_gin;

ALTER TABLE messages
    ADD COLUMN search_vector tsvector;

-- Rows stored before this migration, with the default configuration. The
-- column stays nullable: a row written by hand without it is simply not
-- found by search, rather than refused.
UPDATE messages
SET search_vector = to_tsvector('simple'::regconfig, coalesce(content, ''));

CREATE INDEX messages_search_idx
    ON messages USING gin (user_id, search_vector);

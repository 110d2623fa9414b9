-- better-auth users and sessions, read and written in place.
-- Tables and quoted camelCase columns are better-auth's (migrations/0001).
--
-- Time zones: "expiresAt" and the other date columns are timestamptz when
-- better-auth (or chatstore's 0001) created them through Kysely, but plain
-- `timestamp` holding UTC wall-clock time in older or Drizzle/Prisma-made
-- schemas.
--   * Reading (session_user) is right for both types under any session
--     TimeZone: extract(epoch FROM ...) counts seconds since 1970-01-01 UTC
--     for timestamptz and, for timestamp, "without regard to timezone", i.e.
--     it reads the wall clock as UTC -- exactly better-auth's convention.
--   * Writing a `timestamp` column from now() or a timestamptz parameter
--     converts through the session TimeZone, so the pool sets
--     server_settings={'timezone': 'UTC'}; with timestamptz columns the
--     setting changes nothing.


-- name: session_user :one
-- One round trip per request: the session by token (an index probe on the
-- UNIQUE "token"), still valid, joined to its user so a session that
-- outlived its user never authenticates. The expiry test compares epoch
-- seconds so it holds for timestamp and timestamptz columns alike (see the
-- top of this file); expires_at is returned as timestamptz either way.
-- session_id is what revocation notifications name (migrations/0008), so
-- the caller can forget this session when one arrives.
SELECT
    s.id AS session_id,
    u.id AS user_id,
    to_timestamp(extract(EPOCH FROM s."expiresAt")) AS expires_at
FROM "session" AS s
INNER JOIN "user" AS u
    ON s."userId" = u.id
WHERE s.token = :token
    AND extract(EPOCH FROM s."expiresAt") > extract(EPOCH FROM now());


-- name: upsert_user_by_email :scalar
-- Find or create the user with this email (`chatstore token --email`).
-- better-auth stores emails lower-cased, so lookups and inserts normalise
-- the same way and hit the UNIQUE (email) constraint. The no-op DO UPDATE
-- (rather than DO NOTHING) makes RETURNING yield the existing row too, even
-- when a concurrent insert of the same email wins the race; name and
-- timestamps of an existing user are left as they are.
INSERT INTO "user" (
    id,
    name,
    email,
    "emailVerified",
    "createdAt",
    "updatedAt"
)
VALUES (
    :id,
    :name,
    lower(:email),
    FALSE,
    now(),
    now()
)
ON CONFLICT (email) DO UPDATE
    SET email = "user".email
RETURNING id;


-- name: create_session :scalar
-- A new session for a user, as better-auth's createSession writes it.
-- :expires_at is cast explicitly so the driver always sends a timestamptz
-- (an aware datetime), whatever the column type; ipAddress and userAgent
-- stay NULL because the session is not made from a browser request.
INSERT INTO "session" (
    id,
    token,
    "userId",
    "expiresAt",
    "createdAt",
    "updatedAt",
    "ipAddress",
    "userAgent"
)
VALUES (
    :id,
    :token,
    :user_id,
    :expires_at::timestamptz,
    now(),
    now(),
    NULL,
    NULL
)
RETURNING token;

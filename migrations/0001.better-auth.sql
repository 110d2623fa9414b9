-- better-auth's core tables: "user", "session", "account", "verification".
--
-- Why only-if-absent: chatstore shares its database with a better-auth
-- server (sessions are validated here, in SQL). When that server got there
-- first, its tables are its own and this migration leaves them exactly as
-- they are: no column, index or constraint is added to a table chatstore
-- did not create. When chatstore runs first (or alone), it creates the
-- tables column for column as better-auth would, so a better-auth server
-- pointed at this database later finds its schema already in place.
--
-- Source followed: better-auth 1.4.x, PostgreSQL, Kysely adapter, i.e. what
-- `npx @better-auth/cli migrate` / `generate` emits for the default options:
--   - fields:  packages/core/src/db/get-tables.ts (getAuthTables)
--   - types:   packages/better-auth/src/db/get-migration.ts (getMigrations):
--              string -> text, boolean -> boolean, date -> timestamptz,
--              id -> text primary key, references -> ON DELETE CASCADE,
--              unique -> UNIQUE, required -> NOT NULL, a date field with a
--              defaultValue -> DEFAULT CURRENT_TIMESTAMP,
--              index: true -> CREATE INDEX "<table>_<field>_idx".
-- Older better-auth releases (and schemas generated through its Drizzle or
-- Prisma adapters) have `timestamp` (without time zone) columns and foreign
-- keys without ON DELETE CASCADE; such a database is left untouched too,
-- which is why sql/auth.sql reads "expiresAt" in a way that is right for
-- both column types.
--
-- Ownership: every table this migration creates is recorded in
-- chatstore_owned_tables, in the same transaction. The rollback drops only
-- the recorded tables, so rolling chatstore back never destroys a
-- better-auth database that existed before it.
--
-- Existence is checked with to_regclass() on the unqualified name, i.e.
-- through search_path, exactly as the unqualified queries in sql/*.sql will
-- resolve "user" and "session".

CREATE TABLE IF NOT EXISTS chatstore_owned_tables (
    name text PRIMARY KEY
);

DO $migration$
BEGIN
    -- "user": one row per person. better-auth normalises email to lower
    -- case before writing it; the UNIQUE constraint is what makes
    -- "find or create by email" (sql/auth.sql) a single statement.
    IF to_regclass('"user"') IS NULL THEN
        CREATE TABLE IF NOT EXISTS "user" (
            "id"            text        NOT NULL PRIMARY KEY,
            "name"          text        NOT NULL,
            "email"         text        NOT NULL UNIQUE,
            "emailVerified" boolean     NOT NULL,
            "image"         text,
            "createdAt"     timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
            "updatedAt"     timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
        );
        INSERT INTO chatstore_owned_tables (name) VALUES ('user');
    END IF;

    -- "session": the bearer/cookie token is "token" (UNIQUE, hence indexed:
    -- the per-request lookup is one index probe). "updatedAt" has no
    -- default in better-auth (only onUpdate), so none here either.
    IF to_regclass('"session"') IS NULL THEN
        CREATE TABLE IF NOT EXISTS "session" (
            "id"        text        NOT NULL PRIMARY KEY,
            "expiresAt" timestamptz NOT NULL,
            "token"     text        NOT NULL UNIQUE,
            "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
            "updatedAt" timestamptz NOT NULL,
            "ipAddress" text,
            "userAgent" text,
            "userId"    text        NOT NULL
                REFERENCES "user" ("id") ON DELETE CASCADE
        );
        -- better-auth marks session.userId `index: true`: deleting a user
        -- cascades here, and "list my sessions" filters on it.
        CREATE INDEX IF NOT EXISTS "session_userId_idx"
            ON "session" ("userId");
        INSERT INTO chatstore_owned_tables (name) VALUES ('session');
    END IF;

    -- "account": sign-in methods (password hash, OAuth tokens). chatstore
    -- never reads it; it exists so a better-auth server can use this schema.
    IF to_regclass('"account"') IS NULL THEN
        CREATE TABLE IF NOT EXISTS "account" (
            "id"                    text        NOT NULL PRIMARY KEY,
            "accountId"             text        NOT NULL,
            "providerId"            text        NOT NULL,
            "userId"                text        NOT NULL
                REFERENCES "user" ("id") ON DELETE CASCADE,
            "accessToken"           text,
            "refreshToken"          text,
            "idToken"               text,
            "accessTokenExpiresAt"  timestamptz,
            "refreshTokenExpiresAt" timestamptz,
            "scope"                 text,
            "password"              text,
            "createdAt"             timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
            "updatedAt"             timestamptz NOT NULL
        );
        -- account.userId is `index: true` in better-auth (cascade + lookup).
        CREATE INDEX IF NOT EXISTS "account_userId_idx"
            ON "account" ("userId");
        INSERT INTO chatstore_owned_tables (name) VALUES ('account');
    END IF;

    -- "verification": short-lived codes (email verification, reset links).
    -- Not used by chatstore; created for the same reason as "account".
    IF to_regclass('"verification"') IS NULL THEN
        CREATE TABLE IF NOT EXISTS "verification" (
            "id"         text        NOT NULL PRIMARY KEY,
            "identifier" text        NOT NULL,
            "value"      text        NOT NULL,
            "expiresAt"  timestamptz NOT NULL,
            "createdAt"  timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
            "updatedAt"  timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
        );
        -- verification.identifier is `index: true` in better-auth: codes
        -- are looked up by it.
        CREATE INDEX IF NOT EXISTS "verification_identifier_idx"
            ON "verification" ("identifier");
        INSERT INTO chatstore_owned_tables (name) VALUES ('verification');
    END IF;
END
$migration$;

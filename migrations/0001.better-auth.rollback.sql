-- Undo 0001.better-auth.sql: drop the better-auth tables chatstore created,
-- and nothing else.
--
-- Why the bookkeeping table: 0001 creates each of "user", "session",
-- "account", "verification" only if it was absent, and records the ones it
-- created in chatstore_owned_tables. A table that a better-auth server
-- created before chatstore arrived is not recorded, so it survives the
-- rollback with all its rows.
--
-- Order: dependants first ("verification", "account", "session"), "user"
-- last, because "session" and "account" reference "user". No CASCADE:
-- if something outside chatstore has come to depend on one of these tables
-- (a better-auth plugin table referencing "user", say), the rollback fails
-- loudly instead of silently dropping that table's foreign key.
--
-- Caveat: ownership is decided when 0001 runs. If a better-auth server was
-- pointed at this database afterwards and now keeps its users in tables
-- chatstore created, rolling back 0001 drops them; back up first.

-- A rollback drops what its migration created, and an operator runs it on
-- purpose: it waits for its locks rather than give up half-way through a
-- deliberate undo.
-- squawk-ignore-file ban-drop-table, require-lock-timeout

DO $rollback$
BEGIN
    -- to_regclass() guards keep the rollback safe to rerun after a partial
    -- manual cleanup.
    IF to_regclass('chatstore_owned_tables') IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM chatstore_owned_tables WHERE name = 'verification') THEN
            DROP TABLE IF EXISTS "verification";
        END IF;
        IF EXISTS (SELECT 1 FROM chatstore_owned_tables WHERE name = 'account') THEN
            DROP TABLE IF EXISTS "account";
        END IF;
        IF EXISTS (SELECT 1 FROM chatstore_owned_tables WHERE name = 'session') THEN
            DROP TABLE IF EXISTS "session";
        END IF;
        IF EXISTS (SELECT 1 FROM chatstore_owned_tables WHERE name = 'user') THEN
            DROP TABLE IF EXISTS "user";
        END IF;
    END IF;
END
$rollback$;

DROP TABLE IF EXISTS chatstore_owned_tables;

-- The rules on a single column of messages and conversations move from
-- table CHECK constraints into domains (issue 11; BENCHMARKS.md, "The
-- rules the database itself enforces"). What they refuse, and the names a
-- violation reports, are unchanged.
--
-- Why: PostgreSQL reads every CHECK constraint of a table anew from its
-- stored text for every statement that writes the table, and prepares it
-- again (ExecRelCheck: stringToNode, then ExecPrepareExpr), whatever the
-- number of rows: messages' single-column rules on every insert, and
-- conversations' on the update of its conversation that every append
-- makes, although that update never touches a title or metadata. A
-- domain's constraints are parsed once a session and kept in its type
-- cache, and are checked only on a value written into the column.
-- Measured on chatstore's own append (scripts/bench_append_cost, variant
-- table_checks, which puts the table constraints back): 36 µs less an
-- append on one connection, 12 µs less server CPU at 16 (BENCHMARKS.md,
-- "The rules the database itself enforces").
--
-- Each domain is its column's, named table_column, and its constraint
-- keeps the name the table constraint had: a violation is still SQLSTATE
-- 23514 naming the same rule (tests/test_migrations.py writes a row that
-- breaks each one). The rules that span two columns stay table
-- constraints; seq > 0 stays one too (seq is in the primary key, and its
-- rule costs next to nothing).
--
-- How, with the ACCESS EXCLUSIVE lock held for catalog changes only, not
-- for a scan of the table:
--   * ALTER COLUMN ... TYPE from a type to a domain over it that has no
--     constraint yet changes the catalog alone: no rewrite, no scan (to a
--     domain with constraints, PostgreSQL would rewrite the table);
--   * but it re-adds, and so re-checks with a scan of the whole table,
--     every table constraint that names the column. So the five
--     two-column rules naming a changed column are dropped first and added
--     back NOT VALID; 0018 validates them, which reads the table without
--     blocking its writers (SHARE UPDATE EXCLUSIVE);
--   * the domains' constraints are added NOT VALID and stay so. A NOT
--     VALID domain constraint is enforced on every value written, as any
--     other; only the rows already stored were not re-read. They need not
--     be: each passed the same rule as a table constraint, dropped in this
--     transaction under this lock, so no row came in between. Validating
--     it (ALTER DOMAIN ... VALIDATE CONSTRAINT) would hold a SHARE lock on
--     the table, which blocks every append, for the whole scan.
-- One transaction: there is no moment without a rule.
--
-- Run it with no older chatstore process serving, as 0013: a statement a
-- process prepared before it that returns one of these columns now
-- returns its domain, and PostgreSQL refuses to run a prepared statement
-- whose result type changed ("cached plan must not change result type",
-- 0A000). asyncpg prepares it again by itself outside a transaction;
-- inside one, a chatstore of before this migration answers 500, once per
-- statement and connection. From this release on it answers 503 with
-- Retry-After (chatstore/dberrors.py), for this migration's rollback and
-- for the migrations to come.
-- squawk-ignore-file ban-drop-constraint
-- (each rule dropped here is added back below, in this transaction: as a
-- domain's constraint, or NOT VALID on the table)
-- squawk-ignore-file ban-alter-domain-with-add-constraint
-- (its hazard is the validating scan: every ADD here is NOT VALID, on a
-- domain no other column uses, and nothing validates it)
-- squawk-ignore-file changing-column-type
-- (from a type to a constraint-less domain over it: a catalog change, no
-- rewrite; see above)
-- depends: 0016.follow-leases

-- Give up rather than queue: while an ALTER waits for its lock, every
-- append and every read of messages would queue behind it.
SET LOCAL lock_timeout = '5s';

-- Both tables' locks first, in the order every writer takes them (the
-- conversation, then its messages), so that the migration queues behind
-- an append without deadlocking with it.
LOCK TABLE conversations, messages IN ACCESS EXCLUSIVE MODE;

CREATE DOMAIN messages_role AS text;
CREATE DOMAIN messages_name AS text;
CREATE DOMAIN messages_tool_calls AS jsonb;
CREATE DOMAIN messages_metadata AS jsonb;
CREATE DOMAIN messages_item AS jsonb;
CREATE DOMAIN conversations_title AS text;
CREATE DOMAIN conversations_metadata AS jsonb;

-- Every table constraint that names a column changed below: the five
-- single-column rules that become domains, and the five two-column rules
-- that are added back after the change.
ALTER TABLE messages
DROP CONSTRAINT messages_role_known,
DROP CONSTRAINT messages_name_format,
DROP CONSTRAINT messages_tool_calls_non_empty_array,
DROP CONSTRAINT messages_metadata_is_object,
DROP CONSTRAINT messages_item_is_object,
DROP CONSTRAINT messages_tool_call_id_only_and_always_on_tool,
DROP CONSTRAINT messages_tool_calls_only_on_assistant,
DROP CONSTRAINT messages_content_null_only_with_tool_calls,
DROP CONSTRAINT messages_role_or_item,
DROP CONSTRAINT messages_item_key_only_on_items;

ALTER TABLE messages
ALTER COLUMN role TYPE messages_role,
ALTER COLUMN name TYPE messages_name,
ALTER COLUMN tool_calls TYPE messages_tool_calls,
ALTER COLUMN metadata TYPE messages_metadata,
ALTER COLUMN item TYPE messages_item;

ALTER TABLE conversations
DROP CONSTRAINT conversations_title_length,
DROP CONSTRAINT conversations_metadata_is_object;

ALTER TABLE conversations
ALTER COLUMN title TYPE conversations_title,
ALTER COLUMN metadata TYPE conversations_metadata;

-- The single-column rules, as they were (0002, 0013), on the value alone.
-- A NULL passes each, as it passed the table constraint.
ALTER DOMAIN messages_role
ADD CONSTRAINT messages_role_known
CHECK (value IN ('system', 'developer', 'user', 'assistant', 'tool')) NOT VALID;

-- A function or participant name, as chat-completions APIs accept it.
ALTER DOMAIN messages_name
ADD CONSTRAINT messages_name_format
CHECK (value ~ '^[A-Za-z0-9_-]{1,64}$') NOT VALID;

ALTER DOMAIN messages_tool_calls
ADD CONSTRAINT messages_tool_calls_non_empty_array
CHECK (jsonb_typeof(value) = 'array' AND jsonb_array_length(value) > 0) NOT VALID;

ALTER DOMAIN messages_metadata
ADD CONSTRAINT messages_metadata_is_object
CHECK (jsonb_typeof(value) = 'object') NOT VALID;

ALTER DOMAIN messages_item
ADD CONSTRAINT messages_item_is_object
CHECK (jsonb_typeof(value) = 'object') NOT VALID;

ALTER DOMAIN conversations_title
ADD CONSTRAINT conversations_title_length
CHECK (char_length(value) <= 200) NOT VALID;

ALTER DOMAIN conversations_metadata
ADD CONSTRAINT conversations_metadata_is_object
CHECK (jsonb_typeof(value) = 'object') NOT VALID;

-- The two-column rules, as they were (0002, 0013), NOT VALID: 0018
-- validates them.
ALTER TABLE messages
ADD CONSTRAINT messages_tool_call_id_only_and_always_on_tool
CHECK ((role = 'tool') = (tool_call_id IS NOT NULL)) NOT VALID,
ADD CONSTRAINT messages_tool_calls_only_on_assistant
CHECK (tool_calls IS NULL OR role = 'assistant') NOT VALID,
ADD CONSTRAINT messages_content_null_only_with_tool_calls
CHECK (role IS NULL OR content IS NOT NULL OR tool_calls IS NOT NULL) NOT VALID,
ADD CONSTRAINT messages_role_or_item
CHECK (
    role IS NOT NULL
    OR (item IS NOT NULL AND content IS NULL AND tool_calls IS NULL AND tool_call_id IS NULL)
) NOT VALID,
ADD CONSTRAINT messages_item_key_only_on_items
CHECK (item_key IS NULL OR item IS NOT NULL) NOT VALID;

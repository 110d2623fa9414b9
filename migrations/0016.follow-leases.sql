-- Live updates are announced only for conversations that someone follows
-- (issue 11): conversations.followed_until is the end of the newest lease a
-- follower took on the conversation (follow_conversations in
-- sql/events.sql; chatstore/events.py takes it before a follower's first
-- read and renews it while the process has followers of it). An append
-- reads it on the row it locks (append_messages) and is announced only
-- while it is in the future: an announcement costs the appender a second
-- round trip and a transaction, and nearly all conversations have no
-- follower at any moment. NULL: never followed.
--
-- Nullable and without a default: the ALTER only updates the catalog,
-- however many conversations there are. Not indexed, on purpose: nothing
-- looks conversations up by it, and an update of an unindexed column is a
-- HOT update (no index entry written), so renewing a lease stays cheap.
-- depends: 0015.citus-ready-keys

-- Give up rather than queue: while the ALTER waits for its lock on
-- conversations, every append (which locks the conversation row) would
-- queue behind it.
SET LOCAL lock_timeout = '5s';

ALTER TABLE conversations
    ADD COLUMN followed_until timestamptz;

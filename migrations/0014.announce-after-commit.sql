-- Live updates are announced by the appender after its commit, no longer by
-- a trigger inside it (issue 11).
--
-- Why: NOTIFY takes PostgreSQL's one lock for the whole notification queue
-- at commit and holds it until the commit is over, WAL flush included. With
-- the trigger of 0005 every append's commit took that lock, so appends
-- committed one at a time, each waiting for its own flush, instead of many
-- sharing one flush (group commit): the whole database was capped at one
-- append per fsync.
--
-- Now chatstore sends the same notification (channel chatstore_messages,
-- payload {"conversation_id", "seq"}) after the append's transaction has
-- committed, in a transaction of its own that does not wait for the WAL
-- flush (announce_messages in sql/messages.sql): the lock is held for
-- microseconds, and the append's own commit takes no lock but its row's.
--
-- The trade-off, chosen: a message written by anything else (a DBA's
-- INSERT, a restore) is no longer announced. Followers read from the table
-- and re-read at every idle tick (chatstore/events.py), so they still get
-- it, at the next tick rather than at once; and an announcement lost
-- because the appending process died between its commit and its
-- announcement is caught up the same way. See docs/architecture.md ("Live
-- updates") and RELIABILITY.md.
-- depends: 0013.items

SET LOCAL lock_timeout = '5s';

DROP TRIGGER messages_notify_appended ON messages;

-- squawk-ignore ban-drop-function
DROP FUNCTION chatstore_notify_messages();

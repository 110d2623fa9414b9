-- Live updates: the leases that make appends announce themselves
-- (migrations/0016; chatstore/leases.py).

-- name: follow_conversation :scalar
-- Leases the caller's conversation for :lease_seconds from now: while
-- followed_until is in the future, every append to it is announced
-- (append_messages reads it on the row it locks). chatstore/leases.py runs
-- it before a follower's first read, and again every third of the lease
-- while the process has followers of the conversation. Returns the id, or
-- NULL when the conversation is not the caller's (the owner filter) or is
-- gone: nothing is leased then.
--
-- Why no follower misses an append: this UPDATE and append_messages both
-- take the conversation's row lock. If an append locked it first, the lease
-- waits for the append's commit, and the follower's first read, after the
-- lease, sees the message. If the lease committed first, the append's FOR
-- UPDATE returns the leased row (READ COMMITTED locks and reads the newest
-- version of a row, whatever its snapshot), so the append is announced.
--
-- One conversation a statement, renewals too: a statement that locked
-- several conversation rows could deadlock with a transaction that appends
-- to several in another order; this one holds one lock and nothing else.
-- A lease never shortens another process's (greatest), and leaves
-- updated_at alone: following is not activity, and retention must not keep
-- a conversation because someone watched it.
UPDATE conversations AS c
SET
    followed_until = greatest(
        coalesce(c.followed_until, '-infinity'::timestamptz),
        now() + make_interval(secs => :lease_seconds::double precision)
    )
WHERE c.id = :conversation_id
    AND c.user_id = :user_id
RETURNING c.id;

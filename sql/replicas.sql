-- Read replicas (chatstore/replicas.py): where the primary's WAL is, and how
-- far a hot standby has replayed it. LSNs travel as text ('16/B374D848'):
-- chatstore compares them as integers in Python.

-- name: wal_insert_lsn :scalar
-- Asked on the primary after a write's commit has returned: the insert
-- position only moves forward, so it is at or past the end of that commit
-- record, and a standby that has replayed this far shows the write.
SELECT pg_current_wal_insert_lsn()::text AS lsn;

-- name: wal_flush_lsn :scalar
-- The primary's WAL flushed so far: what a standby can have received. The
-- lag monitor samples it to learn when a standby fell behind.
SELECT pg_current_wal_flush_lsn()::text AS lsn;

-- name: replica_replay_lsn :scalar
-- Asked on a standby: the end of the last WAL record it replayed (its
-- queries see every transaction committed up to there); NULL on a server
-- that is not in recovery (a primary given as a replica by mistake).
SELECT pg_last_wal_replay_lsn()::text AS lsn;

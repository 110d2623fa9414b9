-- Archive: a conversation can be put away without being deleted
-- (PATCH /api/conversations/{id} {"archived": true}). The listing leaves
-- archived conversations out unless asked for them, and search can include
-- or exclude them; the indexes that serve the listing (and the retention
-- job) are built CONCURRENTLY by 0011.
--
-- A constant default is stored in the catalog, not written to every row
-- (PostgreSQL 11 and later): the ALTER takes its lock for an instant and
-- rewrites nothing, however many conversations there are.
-- depends: 0009.search-text-bound

-- Give up rather than queue: while the ALTER waits for its lock on
-- conversations, every append (which updates the conversation row) would
-- queue behind it.
SET LOCAL lock_timeout = '5s';

ALTER TABLE conversations
    ADD COLUMN archived boolean NOT NULL DEFAULT FALSE;

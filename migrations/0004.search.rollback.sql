-- btree_gin stays: another schema object may use it, and it is harmless.
DROP INDEX messages_search_idx;
ALTER TABLE messages DROP COLUMN search_vector;

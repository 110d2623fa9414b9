-- The service's own questions about the database.

-- name: applied_migrations :many
-- /readyz: which migrations yoyo has recorded as applied. No user data.
SELECT migration_id
FROM _yoyo_migration;

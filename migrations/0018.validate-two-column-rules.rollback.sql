-- Nothing to undo: a validated constraint is what 0017's rollback needs
-- too, and a constraint cannot be made NOT VALID again.
SELECT 1;

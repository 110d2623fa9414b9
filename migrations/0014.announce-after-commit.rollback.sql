-- The trigger of 0005 again: every statement that appends messages
-- announces them at its commit (chatstore's own announcement after commit
-- then doubles it, which followers absorb: they read from the table).
-- A rollback is run on purpose by an operator: it waits for its locks
-- rather than give up half-way through a deliberate undo.
-- squawk-ignore-file require-lock-timeout

CREATE FUNCTION chatstore_notify_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'chatstore_messages',
        json_build_object('conversation_id', grouped.conversation_id, 'seq', grouped.last_seq)::text
    )
    FROM (
        SELECT appended.conversation_id, max(appended.seq) AS last_seq
        FROM appended
        GROUP BY appended.conversation_id
    ) AS grouped;
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_notify_appended
    AFTER INSERT ON messages
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT
    EXECUTE FUNCTION chatstore_notify_messages();

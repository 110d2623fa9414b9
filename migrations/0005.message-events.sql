-- Live updates: every statement that appends messages tells listeners which
-- conversation grew and up to which seq, on the channel chatstore_messages.
-- A trigger rather than a clause of the append query so that nothing that
-- writes messages (a DBA's INSERT, a restore) can skip it. NOTIFY is
-- delivered at commit, only if the transaction commits, and once per
-- distinct payload per transaction. The payload is small on purpose
-- (NOTIFY payloads are limited to 8000 bytes); listeners read the messages
-- themselves from the table, which is what makes a replay gap-free.
-- depends: 0004.search

-- Already applied on users' databases, so not edited to satisfy squawk (see
-- .squawk.toml); the rules it breaks, and why that was safe:
-- squawk-ignore-file require-lock-timeout
-- (CREATE TRIGGER locks messages against writes only for the catalog update)

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

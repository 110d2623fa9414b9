-- Revocations: every change that can end a better-auth session tells every
-- chatstore process, on the channel chatstore_sessions, which session it was,
-- so each process drops what it remembers of it (the session cache of
-- chatstore/http/auth.py, open event streams) at once instead of trusting
-- it for a few more seconds.
--
-- Which changes: the row deleted (sign-out, revokeSession, a deleted user:
-- the foreign key cascade runs this trigger too), its token or user
-- replaced, or its expiry moved earlier. An extension of "expiresAt"
-- (better-auth refreshes sessions as they are used) ends nothing and says
-- nothing. A trigger rather than a clause of chatstore's queries because
-- better-auth, not chatstore, writes these rows.
--
-- The payload is the session's id, never its token: every connection that
-- listens on the database sees every payload, and the token is the
-- credential. NOTIFY is delivered at commit, only if the transaction
-- commits, once per distinct payload per transaction.
-- depends: 0007.idempotency-claims

-- The triggers lock "session" against writes (sign-ins, refreshes) while
-- they wait for it: give up rather than queue them.
SET LOCAL lock_timeout = '5s';

CREATE FUNCTION chatstore_notify_session_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chatstore_sessions', OLD.id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER session_notify_deleted
    AFTER DELETE ON "session"
    FOR EACH ROW
    EXECUTE FUNCTION chatstore_notify_session_revoked();

CREATE TRIGGER session_notify_changed
    AFTER UPDATE OF "expiresAt", token, "userId" ON "session"
    FOR EACH ROW
    WHEN (
        new."expiresAt" < old."expiresAt"
        OR new.token IS DISTINCT FROM old.token
        OR new."userId" IS DISTINCT FROM old."userId"
    )
    EXECUTE FUNCTION chatstore_notify_session_revoked();

-- Conversations and their messages.
--
-- Ownership is structural: a message carries its owner's user_id and the
-- composite foreign key (conversation_id, user_id) makes it impossible for a
-- message to belong to a conversation of another user. Deleting a user
-- cascades to their conversations, and a conversation to its messages.
-- depends: 0001.better-auth

-- Already applied on users' databases, so not edited to satisfy squawk (see
-- .squawk.toml); the rules it breaks, and why that was safe:
-- squawk-ignore-file require-lock-timeout
-- (the new tables' foreign keys lock "user" for an instant; nothing else exists yet)
-- squawk-ignore-file prefer-bigint-over-int
-- (message_count counts one conversation's messages: 2^31 is out of reach)

CREATE TABLE conversations (
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id       text        NOT NULL,
    title         text,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The highest seq ever handed out. Appends take it from here under the
    -- row lock, so seq is gap-free under concurrency and never reused even
    -- after deletes (message_count can go down, last_seq cannot).
    last_seq      bigint      NOT NULL DEFAULT 0,
    -- The seq of the newest message still stored (0 when empty): what
    -- expected_last_seq is compared with. On this row, not computed from
    -- messages, so that a writer that waited for the row lock compares with
    -- what the previous writer left, not with its own older snapshot.
    tail_seq      bigint      NOT NULL DEFAULT 0,
    message_count integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT conversations_pkey PRIMARY KEY (id),
    -- Target of the messages' composite foreign key.
    CONSTRAINT conversations_id_user_id_key UNIQUE (id, user_id),
    CONSTRAINT conversations_user_id_fkey
        FOREIGN KEY (user_id) REFERENCES "user" (id) ON DELETE CASCADE,
    CONSTRAINT conversations_title_length
        CHECK (char_length(title) <= 200),
    CONSTRAINT conversations_metadata_is_object
        CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT conversations_counters_non_negative
        CHECK (last_seq >= 0 AND message_count >= 0 AND message_count <= last_seq
               AND tail_seq >= 0 AND tail_seq <= last_seq)
);

-- Access path: a user's conversations, newest activity first, id as the
-- tiebreaker of the keyset cursor (list_conversations_first/_after).
CREATE INDEX conversations_user_activity_idx
    ON conversations (user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    conversation_id uuid        NOT NULL,
    seq             bigint      NOT NULL,
    user_id         text        NOT NULL,
    role            text        NOT NULL,
    content         text,
    name            text,
    tool_calls      jsonb,
    tool_call_id    text,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),

    -- Access path: a conversation's messages by seq (every messages query),
    -- and the index behind the cascade from conversations.
    CONSTRAINT messages_pkey PRIMARY KEY (conversation_id, seq),
    CONSTRAINT messages_conversation_fkey
        FOREIGN KEY (conversation_id, user_id)
        REFERENCES conversations (id, user_id) ON DELETE CASCADE,
    CONSTRAINT messages_seq_positive CHECK (seq > 0),
    CONSTRAINT messages_role_known
        CHECK (role IN ('system', 'developer', 'user', 'assistant', 'tool')),
    CONSTRAINT messages_tool_call_id_only_and_always_on_tool
        CHECK ((role = 'tool') = (tool_call_id IS NOT NULL)),
    CONSTRAINT messages_tool_calls_only_on_assistant
        CHECK (tool_calls IS NULL OR role = 'assistant'),
    CONSTRAINT messages_tool_calls_non_empty_array
        CHECK (tool_calls IS NULL
               OR (jsonb_typeof(tool_calls) = 'array' AND jsonb_array_length(tool_calls) > 0)),
    CONSTRAINT messages_content_null_only_with_tool_calls
        CHECK (content IS NOT NULL OR tool_calls IS NOT NULL),
    CONSTRAINT messages_name_format
        CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$'),
    CONSTRAINT messages_metadata_is_object
        CHECK (jsonb_typeof(metadata) = 'object')
);

-- The tool calls an assistant message made, one row per call id, so that a
-- tool message's tool_call_id is checked with one index lookup instead of a
-- scan of the conversation's history. Rows go with their message.
CREATE TABLE message_tool_calls (
    conversation_id uuid   NOT NULL,
    call_id         text   NOT NULL,
    seq             bigint NOT NULL,

    -- Access path: "does this conversation have a tool call with this id?"
    CONSTRAINT message_tool_calls_pkey PRIMARY KEY (conversation_id, call_id),
    CONSTRAINT message_tool_calls_message_fkey
        FOREIGN KEY (conversation_id, seq)
        REFERENCES messages (conversation_id, seq) ON DELETE CASCADE
);

-- Access path: the cascade from a deleted message to its tool calls.
CREATE INDEX message_tool_calls_message_idx
    ON message_tool_calls (conversation_id, seq);

-- Validates the two-column rules that 0017 added back NOT VALID around its
-- column type changes: a scan of messages that lets appends and reads go
-- on (VALIDATE CONSTRAINT takes SHARE UPDATE EXCLUSIVE), where validating
-- them in 0017 would have scanned under its ACCESS EXCLUSIVE lock. Each
-- rule held for every row before 0017, and every row written since was
-- checked on the way in, so nothing here can fail.
--
-- Not transactional: each VALIDATE commits by itself, so none holds its
-- lock for longer than its own scan. Each can be run again.
-- transactional: false
-- squawk-ignore-file constraint-missing-not-valid
-- (each VALIDATE is a transaction of its own, after 0017's NOT VALID one)
-- depends: 0017.rules-as-domains

SET lock_timeout = '5s';

ALTER TABLE messages VALIDATE CONSTRAINT messages_tool_call_id_only_and_always_on_tool;

ALTER TABLE messages VALIDATE CONSTRAINT messages_tool_calls_only_on_assistant;

ALTER TABLE messages VALIDATE CONSTRAINT messages_content_null_only_with_tool_calls;

ALTER TABLE messages VALIDATE CONSTRAINT messages_role_or_item;

ALTER TABLE messages VALIDATE CONSTRAINT messages_item_key_only_on_items;

RESET lock_timeout;

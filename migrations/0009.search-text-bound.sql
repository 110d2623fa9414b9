-- chatstore_search_text: the part of a message that full-text search indexes.
--
-- A message may be up to CHATSTORE_MAX_CONTENT_CHARS (1,000,000) characters,
-- but a tsvector holds at most 1 MB (1,048,575 bytes) of lexemes and
-- positions: to_tsvector of about a million characters of distinct words
-- fails with "string is too long for tsvector", and the append failed with
-- it (a valid message answered with a 500). Every message is stored whole;
-- search indexes its first 50,000 characters.
--
-- Why 50,000: to_tsvector counts, for each distinct lexeme, its bytes,
-- at most 1 byte of alignment, a 2-byte count of positions and 2 bytes per
-- position. The parser gives a character to at most two tokens (a compound
-- word and its part, "foo-bar" and "bar"; a URL and its host or path), a
-- character lowercases to at most 4 UTF-8 bytes, and each token has at most
-- one position. So N characters make at most 2 * 4 * N bytes of lexemes
-- plus 5 bytes for each of at most 2 * N tokens: 18 * N bytes, and
-- 18 * 50,000 = 900,000 < 1,048,575 whatever the text. (This holds for the
-- built-in configurations, simple and the snowball stemmers, whose lexeme
-- is never longer than its token; a dictionary that expands a word into
-- several lexemes needs a smaller bound.) The worst text found in practice,
-- hyphenated pairs of 4-byte characters, makes 7.5 bytes a character
-- (tests/features/test_search.py).
--
-- One function, so every place that computes search_vector indexes the same
-- text: append_messages (sql/messages.sql) calls it. It is IMMUTABLE and a
-- single expression, so the planner inlines it.
--
-- Rows stored before this migration keep their vectors: every one of them
-- was computed successfully, so it is within the limit, and recomputing it
-- would need the text-search configuration it was written with, which the
-- database does not record. Their snippets are bounded at query time like
-- every other (sql/search.sql).
-- depends: 0008.session-revocations

-- A new function locks no table; set all the same, as in every migration.
SET LOCAL lock_timeout = '5s';

CREATE FUNCTION chatstore_search_text(content text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT left(coalesce(content, ''), 50000) $$;

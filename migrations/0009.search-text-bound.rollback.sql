DROP FUNCTION chatstore_search_text(text);

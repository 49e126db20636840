-- chatroom schema, version 4: message search.
--
-- One row per live message: its search tokens (`store::search::text`:
-- whole tokens, case-folded, cut to 64 characters; made by the server, the
-- same for every backend) as a tsvector with no dictionary, so a term's
-- whole words are `'word'` and its last token `'start':*`; and its post
-- time in ms, the order of results (newest first). The append transaction
-- that stores, edits or deletes a message writes its row too, so a
-- message is findable as soon as it is stored. The text itself is read
-- from `messages`, where every candidate is checked exactly.
CREATE TABLE message_search (
    room   text COLLATE "C" NOT NULL,
    id     bigint NOT NULL,
    ts_ms  bigint NOT NULL,
    words  tsvector NOT NULL,
    PRIMARY KEY (room, id)
);
-- No pending list (fastupdate): every search would scan it (up to 4 MB)
-- until a vacuum merges it; each append writes its entries at once.
CREATE INDEX message_search_words ON message_search USING gin (words) WITH (fastupdate = off);
CREATE INDEX message_search_order ON message_search (ts_ms DESC, room DESC, id DESC);

-- Messages stored before this version get their rows from the first node
-- that starts (`postgres::search::backfill`), in (room, id) order from
-- this cursor; the row is deleted when it is done.
CREATE TABLE search_backfill (
    room  text COLLATE "C" NOT NULL,
    id    bigint NOT NULL
);
INSERT INTO search_backfill (room, id) SELECT '', 0 WHERE EXISTS (SELECT 1 FROM messages);

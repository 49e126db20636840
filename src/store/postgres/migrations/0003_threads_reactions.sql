-- chatroom schema, version 3: threads and reactions.
--
-- A reply names its parent in `thread` (one level: a parent is never a
-- reply). The parent row counts its replies (`reply_count`, deleted ones
-- included: they stay in the thread, deleted) and keeps the latest one's
-- time (`last_reply_at`), so history shows them without a count query.
ALTER TABLE messages ADD COLUMN thread bigint;
ALTER TABLE messages ADD COLUMN reply_count integer NOT NULL DEFAULT 0 CHECK (reply_count >= 0);
ALTER TABLE messages ADD COLUMN last_reply_at text;
-- A thread's replies, in id order.
CREATE INDEX messages_thread ON messages (room, thread, id) WHERE thread IS NOT NULL;

-- The log: a post's `thread`, and for a `react` event (its emoji in
-- `subject`, which way in `added`, since version 2) the message's counts
-- right after it, as JSON (`[{"emoji","count"}]`): what its live frame
-- carried, so the log replays it.
ALTER TABLE events ADD COLUMN thread bigint;
ALTER TABLE events ADD COLUMN reactions text;

-- Reactions as they are now: one row per (message, emoji, user key). `seq`
-- is the event that added it: a message's reactions are shown grouped by
-- emoji in the order of each emoji's earliest row.
CREATE TABLE reactions (
    room        text COLLATE "C" NOT NULL,
    message_id  bigint NOT NULL,
    emoji       text NOT NULL,
    user_key    text NOT NULL,
    seq         bigint NOT NULL,
    PRIMARY KEY (room, message_id, emoji, user_key)
);

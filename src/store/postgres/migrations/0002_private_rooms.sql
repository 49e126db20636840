-- chatroom schema, version 2: private rooms, direct messages, membership,
-- and the columns the newer room events need.
--
-- A room is public (everyone may read it) or private (only its members).
-- Privacy is fixed when the room is created. A direct message is a private
-- room of exactly two members, named in `dm_members` (lower-cased keys,
-- sorted); its membership never changes.
ALTER TABLE rooms ADD COLUMN private boolean NOT NULL DEFAULT false;
ALTER TABLE rooms ADD COLUMN dm_members text[];

-- The members of private rooms, by lower-cased user key; `username` is the
-- name as the member spells it. The creator of a private room is a member
-- from the start.
CREATE TABLE room_members (
    room      text COLLATE "C" NOT NULL,
    user_key  text NOT NULL,
    username  text NOT NULL,
    added_by  text NOT NULL,
    added_at  text NOT NULL,
    PRIMARY KEY (room, user_key)
);
-- "Which private rooms is this user in?" (room lists, search, DMs).
CREATE INDEX room_members_by_user ON room_members (user_key, room);

-- Newer event kinds: `member` (someone added to or removed from a private
-- room: `subject` is the member, `author` who did it, `added` which way)
-- and `react` (a reaction toggled on message `message_id`: `subject` is
-- the emoji, `author` who reacted, `added` which way).
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check CHECK (kind IN ('post', 'edit', 'delete', 'member', 'react'));
ALTER TABLE events ADD COLUMN subject text;
ALTER TABLE events ADD COLUMN added boolean;

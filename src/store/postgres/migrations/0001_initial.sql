-- chatroom schema, version 1: rooms and their event log, accounts,
-- sessions, subscriptions and read markers.
--
-- Times a client sees (`ts`, `edited_at`, `created_at`) are kept as the
-- RFC 3339 text the server made, so they read back exactly as written
-- (and as a JSON-lines data directory holds them after `chatroom migrate`).

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- One row per room. `last_seq` is the room's counter: an append locks the
-- row (SELECT … FOR UPDATE), takes the next seqs and sets it in the same
-- transaction, so seqs are gap-free and commit in order. `posts` counts the
-- room's posts, so the dedup window ("the last 1,024 posts") is a range of
-- `messages.post_no`.
CREATE TABLE rooms (
    name        text COLLATE "C" PRIMARY KEY,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_seq    bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    posts       bigint NOT NULL DEFAULT 0 CHECK (posts >= 0)
);
-- Room search: case-insensitive substring (LIKE '%…%') served by trigrams.
CREATE INDEX rooms_name_trgm ON rooms USING gin (lower(name) gin_trgm_ops);

-- The log: every post, edit and delete, by (room, seq). A post's seq is
-- its message id. Once a message is deleted, `text` of its post and edits
-- is NULL (the text is taken out everywhere).
--
-- `room` has no foreign key, here or in `messages`: rows are written only
-- by a transaction that holds the room's row locked (and rooms are never
-- deleted), and a per-row key check would cost more than half of each
-- batch's insert.
CREATE TABLE events (
    room        text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    kind        text NOT NULL CHECK (kind IN ('post', 'edit', 'delete')),
    message_id  bigint NOT NULL,
    author      text NOT NULL,
    text        text,
    client_id   text,
    ts          text NOT NULL,
    PRIMARY KEY (room, seq)
);
-- A message's edits, to take their text out when it is deleted (its post
-- is found by the primary key: seq = message id).
CREATE INDEX events_edits ON events (room, message_id) WHERE kind = 'edit';

-- Messages as they are now (one row per post): history is a range scan of
-- the primary key, never a replay of the log. `author_key` and `client_id`
-- stay after a delete (a repeated send is still recognised); the text does
-- not.
CREATE TABLE messages (
    room        text COLLATE "C" NOT NULL,
    id          bigint NOT NULL,
    post_no     bigint NOT NULL,
    author      text NOT NULL,
    author_key  text NOT NULL,
    client_id   text NOT NULL,
    text        text NOT NULL,
    ts          text NOT NULL,
    edited_at   text,
    deleted     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (room, id)
);
-- "Did this user already send this client_id among the last posts?"
CREATE INDEX messages_sent ON messages (room, author_key, client_id, post_no);

-- Accounts, by lower-cased name; `no` orders them by creation (the oldest
-- look-alike wins).
CREATE TABLE users (
    key            text PRIMARY KEY,
    username       text NOT NULL,
    password_hash  text NOT NULL,
    created_at     text NOT NULL,
    no             bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);

-- Every look-alike skeleton of every account's name (model::name_skeletons),
-- each held by one account: the unique key makes "is this name or a
-- look-alike taken?" and the write one atomic step.
CREATE TABLE user_skeletons (
    skeleton  text PRIMARY KEY,
    user_key  text NOT NULL REFERENCES users (key)
);

-- Sessions, by the SHA-256 hash of their id (never the id).
CREATE TABLE sessions (
    id_hash       text PRIMARY KEY,
    username      text NOT NULL,
    guest         boolean NOT NULL,
    created_ms    bigint NOT NULL,
    last_seen_ms  bigint NOT NULL
);

-- A subscriber is an account's lower-cased name or a guest session's id hash.
CREATE TABLE subscriptions (
    subscriber  text NOT NULL,
    room        text COLLATE "C" NOT NULL,
    PRIMARY KEY (subscriber, room)
);

CREATE TABLE read_markers (
    subscriber  text NOT NULL,
    room        text COLLATE "C" NOT NULL,
    last_id     bigint NOT NULL,
    PRIMARY KEY (subscriber, room)
);

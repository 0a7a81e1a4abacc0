-- The durable inbox of provider events (callbacks, event streams): each stream's head (the
-- last sequence number handed out; taking the next one is the first write of a push, so
-- numbers commit in order), the events, and the replay keys (nonces, event ids) kept for
-- their window.
CREATE TABLE inbox_heads (
    stream TEXT PRIMARY KEY NOT NULL,
    seq    INTEGER NOT NULL
);

CREATE TABLE inbox (
    stream     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    targets    TEXT NOT NULL,
    at_us      INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
);

CREATE TABLE inbox_keys (
    stream     TEXT NOT NULL,
    replay_key TEXT NOT NULL,
    until_us   INTEGER NOT NULL,
    PRIMARY KEY (stream, replay_key)
);
CREATE INDEX inbox_keys_until ON inbox_keys (stream, until_us);

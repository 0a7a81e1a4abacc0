-- The durable inbox of provider events (callbacks, event streams): each stream's head (the
-- last sequence number handed out; taking the next one is the first write of a push and
-- row-locks the head until commit, so pushes of a stream serialize and numbers become
-- visible in order), the events, and the replay keys (nonces, event ids) kept for their
-- window.
CREATE TABLE inbox_heads (
    stream TEXT COLLATE "C" PRIMARY KEY,
    seq    BIGINT NOT NULL
);

CREATE TABLE inbox (
    stream     TEXT COLLATE "C" NOT NULL,
    seq        BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    targets    JSONB NOT NULL,
    at_us      BIGINT NOT NULL,
    PRIMARY KEY (stream, seq)
);

CREATE TABLE inbox_keys (
    stream     TEXT COLLATE "C" NOT NULL,
    replay_key TEXT COLLATE "C" NOT NULL,
    until_us   BIGINT NOT NULL,
    PRIMARY KEY (stream, replay_key)
);
CREATE INDEX inbox_keys_until ON inbox_keys (stream, until_us);

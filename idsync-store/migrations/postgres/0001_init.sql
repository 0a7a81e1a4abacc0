-- idsync store schema, PostgreSQL. Anchors use the "C" collation so they sort byte-wise,
-- like the in-memory store's BTreeMap and SQLite. Times are microseconds since the Unix
-- epoch (UTC). Entities are JSONB.

CREATE TABLE hub_orgs (
    anchor TEXT COLLATE "C" PRIMARY KEY,
    parent TEXT COLLATE "C",
    body   JSONB NOT NULL
);
CREATE INDEX hub_orgs_parent ON hub_orgs (parent);

CREATE TABLE hub_accounts (
    anchor TEXT COLLATE "C" PRIMARY KEY,
    body   JSONB NOT NULL
);

CREATE TABLE hub_memberships (
    org     TEXT COLLATE "C" NOT NULL,
    account TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (org, account)
);
CREATE INDEX hub_memberships_account ON hub_memberships (account);

-- The change feed. feed_head holds the last sequence number handed out; taking the next
-- one is the first write of every hub transaction and row-locks feed_head until commit,
-- so hub writes are serialized and sequence numbers become visible in order (a reader
-- that has seen seq N never misses a seq below N committed later).
CREATE TABLE feed_head (
    id  INTEGER PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO feed_head (id, seq) VALUES (1, 0);

CREATE TABLE feed (
    seq    BIGINT PRIMARY KEY,
    kind   TEXT NOT NULL,
    anchor TEXT COLLATE "C" NOT NULL,
    entity JSONB,
    at_us  BIGINT NOT NULL
);

CREATE TABLE links (
    job    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (job, kind, source)
);

CREATE TABLE shadow (
    job    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    anchor TEXT COLLATE "C" NOT NULL,
    entity JSONB NOT NULL,
    PRIMARY KEY (job, kind, anchor)
);

CREATE TABLE cursors (
    job    TEXT PRIMARY KEY,
    cursor TEXT NOT NULL
);

CREATE TABLE runs (
    id          TEXT COLLATE "C" PRIMARY KEY,
    job         TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_us  BIGINT NOT NULL,
    finished_us BIGINT,
    plan        JSONB,
    summary     JSONB
);
CREATE INDEX runs_started ON runs (started_us, id);
CREATE INDEX runs_job_started ON runs (job, started_us, id);

-- The latest state of each op of each run.
CREATE TABLE journal (
    run_id        TEXT NOT NULL,
    op_index      BIGINT NOT NULL,
    job           TEXT NOT NULL,
    op            JSONB NOT NULL,
    source_anchor TEXT,
    target_anchor TEXT,
    state         TEXT NOT NULL,
    error         TEXT,
    at_us         BIGINT NOT NULL,
    PRIMARY KEY (run_id, op_index)
);
CREATE INDEX journal_open ON journal (job, at_us, op_index) WHERE state = 'intent';

CREATE TABLE audit (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id TEXT NOT NULL,
    job    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    anchor TEXT COLLATE "C" NOT NULL,
    op     TEXT NOT NULL,
    before JSONB,
    after  JSONB,
    at_us  BIGINT NOT NULL
);
CREATE INDEX audit_entity ON audit (kind, anchor, id);

CREATE TABLE leases (
    job      TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    until_us BIGINT NOT NULL
);

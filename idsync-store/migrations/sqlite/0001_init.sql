-- idsync store schema, SQLite. Anchors compare byte-wise (BINARY collation), like the
-- in-memory store's BTreeMap. Times are microseconds since the Unix epoch (UTC).

-- The hub directory: one row per entity, the entity as JSON, plus the columns that
-- the directory's checks look up (parent of an org, org memberships of an account).
CREATE TABLE hub_orgs (
    anchor TEXT PRIMARY KEY NOT NULL,
    parent TEXT,
    body   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX hub_orgs_parent ON hub_orgs (parent);

CREATE TABLE hub_accounts (
    anchor TEXT PRIMARY KEY NOT NULL,
    body   TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE hub_memberships (
    org     TEXT NOT NULL,
    account TEXT NOT NULL,
    PRIMARY KEY (org, account)
) WITHOUT ROWID;
CREATE INDEX hub_memberships_account ON hub_memberships (account);

-- The change feed. feed_head holds the last sequence number handed out; taking the next
-- one is the first write of every hub transaction, so sequence numbers commit in order.
CREATE TABLE feed_head (
    id  INTEGER PRIMARY KEY NOT NULL,
    seq INTEGER NOT NULL
);
INSERT INTO feed_head (id, seq) VALUES (1, 0);

CREATE TABLE feed (
    seq    INTEGER PRIMARY KEY NOT NULL,
    kind   TEXT NOT NULL,
    anchor TEXT NOT NULL,
    entity TEXT,
    at_us  INTEGER NOT NULL
);

CREATE TABLE links (
    job    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (job, kind, source)
) WITHOUT ROWID;

CREATE TABLE shadow (
    job    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    anchor TEXT NOT NULL,
    entity TEXT NOT NULL,
    PRIMARY KEY (job, kind, anchor)
) WITHOUT ROWID;

CREATE TABLE cursors (
    job    TEXT PRIMARY KEY NOT NULL,
    cursor TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE runs (
    id          TEXT PRIMARY KEY NOT NULL,
    job         TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_us  INTEGER NOT NULL,
    finished_us INTEGER,
    plan        TEXT,
    summary     TEXT
);
CREATE INDEX runs_started ON runs (started_us, id);
CREATE INDEX runs_job_started ON runs (job, started_us, id);

-- The latest state of each op of each run.
CREATE TABLE journal (
    run_id        TEXT NOT NULL,
    op_index      INTEGER NOT NULL,
    job           TEXT NOT NULL,
    op            TEXT NOT NULL,
    source_anchor TEXT,
    target_anchor TEXT,
    state         TEXT NOT NULL,
    error         TEXT,
    at_us         INTEGER NOT NULL,
    PRIMARY KEY (run_id, op_index)
);
CREATE INDEX journal_open ON journal (job, at_us, op_index) WHERE state = 'intent';

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    job    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    anchor TEXT NOT NULL,
    op     TEXT NOT NULL,
    before TEXT,
    after  TEXT,
    at_us  INTEGER NOT NULL
);
CREATE INDEX audit_entity ON audit (kind, anchor, id);

CREATE TABLE leases (
    job      TEXT PRIMARY KEY NOT NULL,
    holder   TEXT NOT NULL,
    until_us INTEGER NOT NULL
) WITHOUT ROWID;

-- Idempotency keys of API requests (the bulk import's Idempotency-Key): a digest of the
-- request and the answer given, unique per scope and key; the first writer wins.
CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response     TEXT NOT NULL,
    at_us        INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_at ON idempotency (at_us);

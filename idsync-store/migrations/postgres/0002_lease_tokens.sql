-- Fenced leases: a lease's generation (fencing token). It grows by one every time the
-- lease changes hands; every fenced write checks it in its own transaction. Released
-- leases keep their row (run out), so the next holder's token is still greater.
ALTER TABLE leases ADD COLUMN token BIGINT NOT NULL DEFAULT 1;

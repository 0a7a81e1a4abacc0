-- The index of hub accounts by correlation key, for Store::hub_find_accounts: one row per
-- (field, key, account) for the fields of HUB_KEY_FIELDS whose value has a key (the key is
-- computed in Rust by idsync_core::correlation_key: trimmed, Unicode lowercase; SQL's
-- lower() depends on the collation and is not that rule). Every write of hub_accounts
-- keeps it current in the same transaction. The primary key serves both a lookup (field,
-- key -> anchors in byte-wise anchor order, hence "C") and the removal of an account's old
-- keys (the store knows them: it loads the account before changing it).
CREATE TABLE hub_keys (
    field  TEXT COLLATE "C" NOT NULL,
    key    TEXT COLLATE "C" NOT NULL,
    anchor TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (field, key, anchor)
);

-- A backfill of hub_keys in progress: present from the open that found accounts but no
-- keys (a store created before this table) until the last page is written; `after` is
-- the last account anchor done, so a backfill interrupted by a crash resumes there.
CREATE TABLE hub_keys_backfill (
    id    INTEGER PRIMARY KEY,
    after TEXT COLLATE "C" NOT NULL
);

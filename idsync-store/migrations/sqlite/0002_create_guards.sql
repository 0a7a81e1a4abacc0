-- Guards for the one-round-trip create path of the SQLite hub: inserting an anchor into one
-- of these views checks a rule of the hub directory and aborts the statement (and so the
-- write, which runs in a savepoint) with a message the store maps to an error kind.
-- Nothing is stored.

CREATE VIEW guard_org_absent AS SELECT NULL AS anchor;
CREATE TRIGGER guard_org_absent INSTEAD OF INSERT ON guard_org_absent
WHEN EXISTS (SELECT 1 FROM hub_orgs WHERE anchor = NEW.anchor)
BEGIN SELECT RAISE(ABORT, 'idsync: org exists already'); END;

CREATE VIEW guard_org_present AS SELECT NULL AS anchor;
CREATE TRIGGER guard_org_present INSTEAD OF INSERT ON guard_org_present
WHEN NOT EXISTS (SELECT 1 FROM hub_orgs WHERE anchor = NEW.anchor)
BEGIN SELECT RAISE(ABORT, 'idsync: org does not exist'); END;

CREATE VIEW guard_account_absent AS SELECT NULL AS anchor;
CREATE TRIGGER guard_account_absent INSTEAD OF INSERT ON guard_account_absent
WHEN EXISTS (SELECT 1 FROM hub_accounts WHERE anchor = NEW.anchor)
BEGIN SELECT RAISE(ABORT, 'idsync: account exists already'); END;

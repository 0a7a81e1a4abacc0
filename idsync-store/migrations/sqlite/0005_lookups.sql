-- Links by target: correlation of a change set must know whether a candidate target is
-- already linked to another source of the job, without reading every link.
CREATE INDEX links_target ON links (job, kind, target);

-- Ops whose answer was lost stay open like intents (see JournalState::Unknown).
CREATE INDEX journal_unknown ON journal (job, at_us, op_index) WHERE state = 'unknown';

-- Validator consensus, SQLite flavour: the replicated log of agreed weights, evidence of
-- equivocation, and weight sets that are offered to consensus or carry an agreed vector.

-- One decision per consensus height (the weights epoch), never overwritten: a second, different
-- value at a height is a safety violation the store refuses. value_id: lowercase hex of the
-- 32-byte id of the decided value; proposer: its proposer's hotkey (hex); aggregate_json: the
-- agreed weight per uid as a dense JSON array of u16 (index = uid); vectors: score vectors in the
-- value; signers: precommits in the commit certificate; value, certificate: their canonical
-- encodings; decided_at: Unix ms; decide_ms: from the height's start to the decision; rounds:
-- rounds used (round + 1).
CREATE TABLE decisions (
    height         INTEGER NOT NULL PRIMARY KEY CHECK (height >= 0),
    round          INTEGER NOT NULL CHECK (round >= 0),
    value_id       TEXT    NOT NULL,
    proposer       TEXT    NOT NULL,
    aggregate_json TEXT    NOT NULL,
    vectors        INTEGER NOT NULL CHECK (vectors >= 0),
    signers        INTEGER NOT NULL CHECK (signers >= 0),
    value          BLOB    NOT NULL,
    certificate    BLOB    NOT NULL,
    decided_at     INTEGER NOT NULL,
    decide_ms      INTEGER NOT NULL CHECK (decide_ms >= 0),
    rounds         INTEGER NOT NULL CHECK (rounds >= 1)
);

-- Misbehaviour seen by this validator; recording it again is a no-op. detail: JSON from the
-- consensus engine. Newest first by id (the primary key's index).
CREATE TABLE consensus_evidence (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    height      INTEGER NOT NULL,
    round       INTEGER NOT NULL,
    validator   TEXT    NOT NULL,
    kind        TEXT    NOT NULL
        CHECK (kind IN ('double_vote', 'double_proposal', 'bad_proposal')),
    detail      TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    UNIQUE (height, round, validator, kind)
);

-- Weight sets gain the status 'proposed' (consensus on: this validator's own vector, offered to
-- the others and never submitted) and decision_height (an agreed vector: the height of the
-- decision it comes from). SQLite cannot change a CHECK constraint, so weight_sets is rebuilt.
-- weight_entries is rebuilt with it: with foreign keys on, dropping weight_sets would cascade
-- into the entries. The rename of weight_sets_new rewrites the entries' reference.
CREATE TABLE weight_sets_new (
    id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL REFERENCES score_runs (id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    status          TEXT    NOT NULL
        CHECK (status IN ('pending', 'committed', 'submitted', 'skipped', 'superseded', 'failed',
                          'proposed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    reveal_json     TEXT,
    commit_block    INTEGER,
    submitted_at    INTEGER,
    block           INTEGER,
    tx_hash         TEXT,
    decision_height INTEGER
);
INSERT INTO weight_sets_new (id, run_id, created_at, status, attempts, last_error, reveal_json,
                             commit_block, submitted_at, block, tx_hash)
SELECT id, run_id, created_at, status, attempts, last_error, reveal_json, commit_block,
       submitted_at, block, tx_hash
FROM weight_sets;
-- Ids are never reused: carry the AUTOINCREMENT high-water mark over.
DELETE FROM sqlite_sequence WHERE name = 'weight_sets_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'weight_sets_new', seq FROM sqlite_sequence WHERE name = 'weight_sets';

CREATE TABLE weight_entries_new (
    set_id INTEGER NOT NULL REFERENCES weight_sets_new (id) ON DELETE CASCADE,
    uid    INTEGER NOT NULL,
    hotkey TEXT    NOT NULL,
    weight INTEGER NOT NULL,
    PRIMARY KEY (set_id, uid)
);
INSERT INTO weight_entries_new (set_id, uid, hotkey, weight)
SELECT set_id, uid, hotkey, weight FROM weight_entries;

DROP TABLE weight_entries;
DROP TABLE weight_sets;
ALTER TABLE weight_sets_new RENAME TO weight_sets;
ALTER TABLE weight_entries_new RENAME TO weight_entries;
CREATE INDEX weight_sets_status ON weight_sets (status, id);

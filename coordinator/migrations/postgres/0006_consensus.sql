-- Validator consensus, PostgreSQL flavour: the replicated log of agreed weights, evidence of
-- equivocation, and weight sets that are offered to consensus or carry an agreed vector.

-- One decision per consensus height (the weights epoch), never overwritten: a second, different
-- value at a height is a safety violation the store refuses. value_id: lowercase hex of the
-- 32-byte id of the decided value; proposer: its proposer's hotkey (hex); aggregate_json: the
-- agreed weight per uid as a dense JSON array of u16 (index = uid); vectors: score vectors in the
-- value; signers: precommits in the commit certificate; value, certificate: their canonical
-- encodings; decided_at: Unix ms; decide_ms: from the height's start to the decision; rounds:
-- rounds used (round + 1).
CREATE TABLE decisions (
    height         BIGINT NOT NULL PRIMARY KEY CHECK (height >= 0),
    round          BIGINT NOT NULL CHECK (round >= 0),
    value_id       TEXT   NOT NULL,
    proposer       TEXT   NOT NULL,
    aggregate_json TEXT   NOT NULL,
    vectors        BIGINT NOT NULL CHECK (vectors >= 0),
    signers        BIGINT NOT NULL CHECK (signers >= 0),
    value          BYTEA  NOT NULL,
    certificate    BYTEA  NOT NULL,
    decided_at     BIGINT NOT NULL,
    decide_ms      BIGINT NOT NULL CHECK (decide_ms >= 0),
    rounds         BIGINT NOT NULL CHECK (rounds >= 1)
);

-- Misbehaviour seen by this validator; recording it again is a no-op. detail: JSON from the
-- consensus engine. Newest first by id (the primary key's index).
CREATE TABLE consensus_evidence (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    height      BIGINT NOT NULL,
    round       BIGINT NOT NULL,
    validator   TEXT   NOT NULL,
    kind        TEXT   NOT NULL
        CHECK (kind IN ('double_vote', 'double_proposal', 'bad_proposal')),
    detail      TEXT   NOT NULL,
    recorded_at BIGINT NOT NULL,
    UNIQUE (height, round, validator, kind)
);

-- Weight sets gain the status 'proposed' (consensus on: this validator's own vector, offered to
-- the others and never submitted) and decision_height (an agreed vector: the height of the
-- decision it comes from).
ALTER TABLE weight_sets DROP CONSTRAINT weight_sets_status_check;
ALTER TABLE weight_sets ADD CONSTRAINT weight_sets_status_check
    CHECK (status IN ('pending', 'committed', 'submitted', 'skipped', 'superseded', 'failed',
                      'proposed'));
ALTER TABLE weight_sets ADD COLUMN decision_height BIGINT;

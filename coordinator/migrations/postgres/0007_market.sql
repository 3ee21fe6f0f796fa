-- The prover market, PostgreSQL flavour: participants who prove batches for a price, the batches
-- they are handed, and every submission they make.

-- id: an unguessable id the coordinator generates (it is the participant's credential);
-- created_at: Unix ms.
CREATE TABLE market_participants (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);

-- One batch to prove. request_id: random, below 2^63, what submissions name; token: the
-- unguessable part of the batch file's path; system: 'matmul' or an external proof system's name;
-- descriptor: the batch file's bytes (JSON); ops: operations in the batch (for price per
-- tera-op). A batch is queued, then assigned to one participant (assigned_at), then answered by
-- an accepted submission (answered_at). Times are Unix ms.
CREATE TABLE market_batches (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id     BIGINT  NOT NULL UNIQUE CHECK (request_id >= 0),
    token          TEXT    NOT NULL UNIQUE,
    system         TEXT    NOT NULL,
    descriptor     TEXT    NOT NULL,
    ops            DOUBLE PRECISION NOT NULL CHECK (ops >= 0),
    state          TEXT    NOT NULL CHECK (state IN ('queued', 'assigned', 'answered')),
    participant_id TEXT,
    assigned_at    BIGINT,
    answered_at    BIGINT,
    created_at     BIGINT  NOT NULL
);
-- Oldest queued first.
CREATE INDEX market_batches_queue ON market_batches (state, id);
CREATE INDEX market_batches_participant ON market_batches (participant_id, state);
-- A participant holds at most one outstanding batch, whatever the callers do.
CREATE UNIQUE INDEX market_batches_one_open ON market_batches (participant_id)
    WHERE state = 'assigned';

-- Every submission, accepted or not. batch_id: NULL when the request id named no batch;
-- reason: why it was rejected ('invalid_proof', 'unknown_request', …); deployment_version: the
-- JSON value as sent (a number or a string), as JSON text; extra: a JSON object of the fields
-- not understood ('{}' when none); server_ms: the coordinator's own time from handing the batch
-- out to this submission, when the batch is known; ops: the batch's operations (0 when unknown);
-- submitted_at: Unix ms.
CREATE TABLE market_submissions (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    participant_id     TEXT    NOT NULL,
    request_id         BIGINT  NOT NULL CHECK (request_id >= 0),
    batch_id           BIGINT,
    verdict            TEXT    NOT NULL CHECK (verdict IN ('accepted', 'rejected')),
    reason             TEXT,
    proving_time_ms    BIGINT  NOT NULL CHECK (proving_time_ms >= 0),
    cost_cents         BIGINT  NOT NULL CHECK (cost_cents >= 0),
    price_cents        BIGINT  NOT NULL CHECK (price_cents >= 0),
    deployment_version TEXT    NOT NULL,
    extra              TEXT    NOT NULL DEFAULT '{}',
    server_ms          BIGINT  CHECK (server_ms >= 0),
    ops                DOUBLE PRECISION NOT NULL CHECK (ops >= 0),
    submitted_at       BIGINT  NOT NULL
);
CREATE INDEX market_submissions_participant ON market_submissions (participant_id, id);
-- The summary reads the newest accepted submissions.
CREATE INDEX market_submissions_verdict ON market_submissions (verdict, id);

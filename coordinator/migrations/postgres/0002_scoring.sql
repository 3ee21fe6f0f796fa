-- Scoring inputs (availability buckets, address changes, leases) and outputs (score runs with
-- their components, weight vectors and their submission), PostgreSQL flavour.

-- One row per worker per 5-minute bucket (Unix ms / 300 000) in which it was heard from.
CREATE TABLE worker_online_buckets (
    worker_key TEXT    NOT NULL,
    bucket     BIGINT NOT NULL,
    PRIMARY KEY (worker_key, bucket)
);
CREATE INDEX worker_online_buckets_bucket ON worker_online_buckets (bucket);

-- The IP of the worker's last registration ('' for rows older than this migration), compared
-- by the registration's first statement so SQLite takes its write lock at once.
ALTER TABLE workers ADD COLUMN ip TEXT NOT NULL DEFAULT '';

-- A worker registering from a different IP than its previous registration.
CREATE TABLE worker_ip_changes (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_key TEXT    NOT NULL,
    at         BIGINT NOT NULL,
    old_ip     TEXT    NOT NULL,
    new_ip     TEXT    NOT NULL
);
CREATE INDEX worker_ip_changes_worker ON worker_ip_changes (worker_key, at);

-- Leases reported through the authenticated API; request_id (BLAKE3 of the request body) makes
-- a replayed request a conflict instead of a second lease.
CREATE TABLE leases (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id   TEXT    NOT NULL UNIQUE,
    worker_key   TEXT    NOT NULL,
    score        DOUBLE PRECISION NOT NULL,
    starts_at    BIGINT NOT NULL,
    ends_at      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    submitted_by TEXT    NOT NULL
);
CREATE INDEX leases_worker ON leases (worker_key, ends_at);

-- One scoring computation.
CREATE TABLE score_runs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    block       BIGINT,
    config_json TEXT    NOT NULL
);

CREATE TABLE miner_scores (
    run_id    BIGINT NOT NULL REFERENCES score_runs (id) ON DELETE CASCADE,
    hotkey    TEXT    NOT NULL,
    uid       BIGINT,
    online    BIGINT NOT NULL CHECK (online IN (0, 1)),
    workers   BIGINT NOT NULL,
    challenge DOUBLE PRECISION NOT NULL,
    lease     DOUBLE PRECISION NOT NULL,
    total     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, hotkey)
);

CREATE TABLE worker_scores (
    run_id         BIGINT NOT NULL REFERENCES score_runs (id) ON DELETE CASCADE,
    worker_key     TEXT    NOT NULL,
    miner_hotkey   TEXT    NOT NULL,
    leased         BIGINT NOT NULL CHECK (leased IN (0, 1)),
    lease_score    DOUBLE PRECISION NOT NULL,
    verified       BIGINT NOT NULL,
    online_buckets BIGINT NOT NULL,
    ip_changes     BIGINT NOT NULL,
    mean_gflops    DOUBLE PRECISION NOT NULL,
    participation  DOUBLE PRECISION NOT NULL,
    availability   DOUBLE PRECISION NOT NULL,
    performance    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, worker_key)
);

-- A weight vector and its way to the chain: pending → committed (commit-reveal) → submitted,
-- or skipped (all zero), superseded (a newer vector was computed first) or failed (final error).
CREATE TABLE weight_sets (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       BIGINT NOT NULL REFERENCES score_runs (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    status       TEXT    NOT NULL
        CHECK (status IN ('pending', 'committed', 'submitted', 'skipped', 'superseded', 'failed')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT,
    reveal_json  TEXT,
    commit_block BIGINT,
    submitted_at BIGINT,
    block        BIGINT,
    tx_hash      TEXT
);
CREATE INDEX weight_sets_status ON weight_sets (status, id);

CREATE TABLE weight_entries (
    set_id BIGINT NOT NULL REFERENCES weight_sets (id) ON DELETE CASCADE,
    uid    BIGINT NOT NULL,
    hotkey TEXT    NOT NULL,
    weight BIGINT NOT NULL,
    PRIMARY KEY (set_id, uid)
);

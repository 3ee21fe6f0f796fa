-- veribench coordinator schema, PostgreSQL flavour.
-- Keys, roots and seeds are lowercase hex TEXT; timestamps are Unix milliseconds (BIGINT);
-- booleans are BIGINT 0/1 (as INTEGER 0/1 in SQLite) so that sqlx's Any driver decodes both alike.

CREATE TABLE workers (
    worker_key    TEXT    NOT NULL PRIMARY KEY,
    miner_hotkey  TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    address       TEXT    NOT NULL,
    hardware_json TEXT    NOT NULL,
    online        BIGINT  NOT NULL CHECK (online IN (0, 1)),
    connected_at  BIGINT  NOT NULL,
    last_seen     BIGINT  NOT NULL
);
CREATE INDEX workers_miner ON workers (miner_hotkey);
CREATE INDEX workers_online_last_seen ON workers (online, last_seen);

-- The devices a worker offered in its last registration, in order.
CREATE TABLE worker_devices (
    worker_key TEXT    NOT NULL REFERENCES workers (worker_key) ON DELETE CASCADE,
    position   BIGINT  NOT NULL,
    device_key TEXT    NOT NULL,
    PRIMARY KEY (worker_key, position)
);
CREATE INDEX worker_devices_device ON worker_devices (device_key);

-- Every (device, worker identity) pair ever claimed: a device with two identities is conflicted.
CREATE TABLE device_claims (
    device_key       TEXT    NOT NULL,
    worker_key       TEXT    NOT NULL,
    miner_hotkey     TEXT    NOT NULL,
    first_claimed_at BIGINT  NOT NULL,
    last_claimed_at  BIGINT  NOT NULL,
    PRIMARY KEY (device_key, worker_key)
);
CREATE INDEX device_claims_worker ON device_claims (worker_key);

-- Identity columns come from sequences: ids are never reused.
CREATE TABLE challenges (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    miner_hotkey TEXT    NOT NULL,
    worker_key   TEXT    NOT NULL,
    device_key   TEXT    NOT NULL,
    mode         TEXT    NOT NULL,
    m            BIGINT  NOT NULL,
    k            BIGINT  NOT NULL,
    n            BIGINT  NOT NULL,
    seed         TEXT    NOT NULL,
    status       TEXT    NOT NULL
        CHECK (status IN ('created', 'sent', 'committed', 'verifying', 'verified', 'failed')),
    reason       TEXT,
    detail       TEXT,
    issued_at    BIGINT  NOT NULL,
    deadline     BIGINT  NOT NULL,
    sent_at      BIGINT,
    committed_at BIGINT,
    verifying_at BIGINT,
    finished_at  BIGINT,
    root         TEXT,
    compute_ms   DOUBLE PRECISION,
    rtt_ms       DOUBLE PRECISION,
    gflops       DOUBLE PRECISION,
    credited     BIGINT  NOT NULL DEFAULT 0 CHECK (credited IN (0, 1))
);
CREATE INDEX challenges_status ON challenges (status, id);
CREATE INDEX challenges_worker ON challenges (worker_key, id);
CREATE INDEX challenges_miner ON challenges (miner_hotkey, status);
CREATE INDEX challenges_device ON challenges (device_key, id);

CREATE TABLE rejections (
    id         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT  NOT NULL,
    peer       TEXT    NOT NULL,
    worker_key TEXT,
    kind       TEXT    NOT NULL,
    detail     TEXT    NOT NULL
);
CREATE INDEX rejections_at ON rejections (at, id);
CREATE INDEX rejections_worker ON rejections (worker_key);

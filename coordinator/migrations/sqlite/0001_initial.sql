-- veribench coordinator schema, SQLite flavour.
-- Keys, roots and seeds are lowercase hex TEXT; timestamps are Unix milliseconds (INTEGER);
-- booleans are INTEGER 0/1 (sqlx's Any driver cannot map SQLite BOOLEAN columns).

CREATE TABLE workers (
    worker_key    TEXT    NOT NULL PRIMARY KEY,
    miner_hotkey  TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    address       TEXT    NOT NULL,
    hardware_json TEXT    NOT NULL,
    online        INTEGER NOT NULL CHECK (online IN (0, 1)),
    connected_at  INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL
);
CREATE INDEX workers_miner ON workers (miner_hotkey);
CREATE INDEX workers_online_last_seen ON workers (online, last_seen);

-- The devices a worker offered in its last registration, in order.
CREATE TABLE worker_devices (
    worker_key TEXT    NOT NULL REFERENCES workers (worker_key) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    device_key TEXT    NOT NULL,
    PRIMARY KEY (worker_key, position)
);
CREATE INDEX worker_devices_device ON worker_devices (device_key);

-- Every (device, worker identity) pair ever claimed: a device with two identities is conflicted.
CREATE TABLE device_claims (
    device_key       TEXT    NOT NULL,
    worker_key       TEXT    NOT NULL,
    miner_hotkey     TEXT    NOT NULL,
    first_claimed_at INTEGER NOT NULL,
    last_claimed_at  INTEGER NOT NULL,
    PRIMARY KEY (device_key, worker_key)
);
CREATE INDEX device_claims_worker ON device_claims (worker_key);

-- AUTOINCREMENT: ids are never reused, even after the newest row is deleted.
CREATE TABLE challenges (
    id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    miner_hotkey TEXT    NOT NULL,
    worker_key   TEXT    NOT NULL,
    device_key   TEXT    NOT NULL,
    mode         TEXT    NOT NULL,
    m            INTEGER NOT NULL,
    k            INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    seed         TEXT    NOT NULL,
    status       TEXT    NOT NULL
        CHECK (status IN ('created', 'sent', 'committed', 'verifying', 'verified', 'failed')),
    reason       TEXT,
    detail       TEXT,
    issued_at    INTEGER NOT NULL,
    deadline     INTEGER NOT NULL,
    sent_at      INTEGER,
    committed_at INTEGER,
    verifying_at INTEGER,
    finished_at  INTEGER,
    root         TEXT,
    compute_ms   REAL,
    rtt_ms       REAL,
    gflops       REAL,
    credited     INTEGER NOT NULL DEFAULT 0 CHECK (credited IN (0, 1))
);
CREATE INDEX challenges_status ON challenges (status, id);
CREATE INDEX challenges_worker ON challenges (worker_key, id);
CREATE INDEX challenges_miner ON challenges (miner_hotkey, status);
CREATE INDEX challenges_device ON challenges (device_key, id);

CREATE TABLE rejections (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    peer       TEXT    NOT NULL,
    worker_key TEXT,
    kind       TEXT    NOT NULL,
    detail     TEXT    NOT NULL
);
CREATE INDEX rejections_at ON rejections (at, id);
CREATE INDEX rejections_worker ON rejections (worker_key);

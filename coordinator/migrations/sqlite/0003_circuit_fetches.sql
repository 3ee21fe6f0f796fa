-- Circuit artifact fetch attempts (issue 6), SQLite flavour: one row per veribench_circuit
-- FetchRecord, served by GET /api/v1/circuits.
-- outcome: 'fetched', 'cache_hit', 'cancelled', or a failure code of FetchError::code
-- (url_refused, expired, hash_mismatch, claimed_by_other, too_large, truncated, network, ...);
-- reason: the error message for failures, NULL otherwise. hash: 64 lowercase hex digits;
-- miner_hotkey: the hotkey as 64 lowercase hex digits; at: Unix milliseconds.
CREATE TABLE circuit_fetches (
    id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    miner_hotkey TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    outcome      TEXT    NOT NULL,
    reason       TEXT,
    bytes        INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    at           INTEGER NOT NULL
);
CREATE INDEX circuit_fetches_miner ON circuit_fetches (miner_hotkey, at);

-- Reliability (issue 16), SQLite flavour.

-- The clock skew measured at the worker's last registration: its Register timestamp minus the
-- coordinator's clock at arrival, less half the connection's round trip (SPEC §8.2). NULL until
-- a registration measured it.
ALTER TABLE workers ADD COLUMN clock_skew_ms INTEGER;

-- One row the coordinator rewrites every second: a write that succeeds proves the database takes
-- writes now (a read would pass on a full disk); `/healthz` reports the outcome.
CREATE TABLE store_probe (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
INSERT INTO store_probe (id, at) VALUES (1, 0);

-- Terminal challenges by time, for the scoring window's and the API's range scans.
CREATE INDEX challenges_finished_at ON challenges (finished_at);

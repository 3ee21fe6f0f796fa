-- Security hardening (issue 10), SQLite flavour: counted refusals and used registration nonces.

-- Refused peer inputs, one row per (peer, kind, worker_key) with a count, instead of one row per
-- refusal (which let anyone who reaches the ports grow the database without bound).
-- peer: the IP without its port, an IPv6 address as its /64, or 'overflow' for refusals counted
-- while the coordinator's buffer was full. worker_key: a registered worker the refusals concern,
-- '' for none ('' rather than NULL so the unique key groups them). last_claimed: the key the most
-- recent refused registration of the group claimed, unproven. detail: the most recent one's.
CREATE TABLE rejection_groups (
    id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    peer         TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    worker_key   TEXT    NOT NULL DEFAULT '',
    last_claimed TEXT,
    count        INTEGER NOT NULL CHECK (count > 0),
    first_at     INTEGER NOT NULL,
    last_at      INTEGER NOT NULL,
    detail       TEXT    NOT NULL,
    UNIQUE (peer, kind, worker_key)
);

-- The rows of the one-row-per-refusal table, grouped by IP (port dropped; an IPv6 address is kept
-- whole) and kind. Whether their worker key was proven cannot be told, so it is kept as a claim.
INSERT INTO rejection_groups (peer, kind, worker_key, last_claimed, count, first_at, last_at, detail)
SELECT peer, kind, '', worker_key, n, first_at, at, substr(detail, 1, 240)
FROM (
    SELECT peer, kind, worker_key, detail, at,
           COUNT(*) OVER (PARTITION BY peer, kind) AS n,
           MIN(at) OVER (PARTITION BY peer, kind) AS first_at,
           ROW_NUMBER() OVER (PARTITION BY peer, kind ORDER BY at DESC, id DESC) AS newest
    FROM (
        SELECT id, at, kind, worker_key, detail,
               CASE
                   WHEN peer LIKE '[%]:%' THEN substr(peer, 2, instr(peer, ']') - 2)
                   WHEN peer LIKE '%.%.%.%:%' THEN substr(peer, 1, instr(peer, ':') - 1)
                   ELSE peer
               END AS peer
        FROM rejections
    ) AS addressed
) AS numbered
WHERE newest = 1;

DROP TABLE rejections;
ALTER TABLE rejection_groups RENAME TO rejections;
CREATE INDEX rejections_last_at ON rejections (last_at, id);
CREATE INDEX rejections_worker ON rejections (worker_key);

-- Nonces of accepted registrations, so a recorded Register frame is refused as a replay even by a
-- restarted coordinator. registered_at: the registration's signed timestamp; rows older than
-- twice the accepted clock skew are pruned (such a registration is refused as stale anyway).
-- nonce: the u64 nonce's bits as a signed 64-bit integer.
CREATE TABLE registration_nonces (
    worker_key    TEXT    NOT NULL,
    nonce         INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (worker_key, nonce)
);
CREATE INDEX registration_nonces_at ON registration_nonces (registered_at);

-- Challenges of a worker rejected as wrong (SPEC §6) in the window of a score run: any one zeroes
-- its performance for that run, and the count shows an operator why.
ALTER TABLE worker_scores ADD COLUMN penalised INTEGER NOT NULL DEFAULT 0;

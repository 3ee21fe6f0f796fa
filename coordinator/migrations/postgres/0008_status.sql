-- Status page (issue 15), PostgreSQL flavour.

-- A miner's newest challenges (its page lists the last 50, and plots its workers' verified
-- rates): without this the (miner_hotkey, status) index would read every challenge the miner
-- ever had and sort them.
CREATE INDEX challenges_miner_id ON challenges (miner_hotkey, id);

-- Operating the projection: dead letters carry what an operator needs, and the read model's
-- tables are versioned by generation so a rebuild can replace them while queries keep answering.

-- last_failed_at: the latest failed attempt. held_version: the highest version of the stream that
-- arrived while the dead letter held it (later events wait behind it). resolution: why an operator
-- skipped it.
ALTER TABLE dead_letters
    ADD COLUMN last_failed_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN held_version   bigint,
    ADD COLUMN resolution     text;

-- One row per projection. Every table of the read model above belongs to the serving generation;
-- a rebuild fills copies of them in the schema `rebuild` and then swaps the two sets of tables in
-- one transaction (see rebuild.rs). This table is not part of any generation.
CREATE TABLE projections (
    name                  text        PRIMARY KEY,
    generation            integer     NOT NULL DEFAULT 1,
    -- The rebuild in flight: stale if its process died, which the rebuild's advisory lock tells.
    rebuild_generation    integer,
    rebuild_position      bigint,
    rebuild_target        bigint,
    rebuild_started_at    timestamptz,
    rebuilt_at            timestamptz
);
INSERT INTO projections (name) VALUES ('read_model');

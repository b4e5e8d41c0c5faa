-- query-svc keeps its read model in its own database (both services keep an sqlx migration
-- history, so they must not share one). Runs once, when the data volume is first created.
CREATE DATABASE pizzeria_read OWNER pizzeria;

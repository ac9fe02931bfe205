-- A refusal before authentication (no or an invalid token) is no longer one row each: the
-- audit writer counts identical ones (same client address, action, outcome and reason) over a
-- minute and writes one row carrying how many it stands for. Every other row stands for one
-- action, count 1.
--
-- The table-wide grants of 00001 and 00004 cover the new column: the sync role (the audit
-- writer) inserts it, the runtime role reads it under read_audit and still cannot insert.
-- Adding a column with a constant default rewrites nothing, and every existing row reads 1,
-- so the check is added NOT VALID: it holds for every new row without scanning the log under
-- an exclusive lock.

-- +goose Up
ALTER TABLE audit_log ADD COLUMN count integer NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_count_positive CHECK (count >= 1) NOT VALID;

-- +goose Down
ALTER TABLE audit_log DROP COLUMN count;

-- A rollout's tick counts its steps by state and claims the next ones many times a second.
-- This index holds every column both statements read, so neither touches the step rows
-- (which carry each step's performed actions and grow large).
DROP INDEX rollout_steps_by_state;
CREATE INDEX rollout_steps_progress ON rollout_steps (rollout_id, wave, state, lease_until, next_attempt_at, company_key, company_id);

-- Until when (epoch ms) a pending step waits for its portal's HubSpot budget; 0 when it
-- does not. Waiting is progress, not a failed attempt, and the rollout's progress shows it.
ALTER TABLE rollout_steps ADD COLUMN waiting_until BIGINT NOT NULL DEFAULT 0;

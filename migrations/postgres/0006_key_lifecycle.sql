-- The signing keys' whole life (docs/ARCHITECTURE.md, "Signing keys"):
--   next (published, not signing yet; becomes active at activate_at)
--   → active (signs; one per algorithm) → retiring (still published and verifying until every
--   token it signed has expired) → retired (kept for the audit trail, private part erased);
--   or revoked (at once, from any state: unpublished, no longer verifying, private part erased).
-- Times are Unix milliseconds on the server's clock. An erased private part is ''.
alter table signing_keys add column activate_at bigint;
alter table signing_keys add column activated_at bigint;
alter table signing_keys add column retiring_at bigint;
alter table signing_keys add column revoked_at bigint;
-- Until now `retired` meant "no longer signs, still verifies": that is `retiring` now.
update signing_keys set state = 'retiring', retiring_at = coalesce(retired_at, created_at),
    retired_at = null where state = 'retired';
update signing_keys set activated_at = created_at where state = 'active';
create unique index signing_keys_one_next on signing_keys (algorithm) where state = 'next';

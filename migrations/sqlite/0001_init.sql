-- Keygate's initial schema (SQLite). Timestamps are milliseconds since the Unix epoch (UTC)
-- so that the same SQL runs on SQLite and PostgreSQL. Never edit once released: add a file.

create table users (
    id text primary key,                        -- UUID v7, hyphenated
    email text not null unique,                 -- trimmed and lower-cased
    username text unique,                       -- lower-cased; null when the user has none
    name text,
    password_hash text not null,                -- PHC string; never leaves the store layer
    roles text not null default '[]',           -- JSON array of strings
    permissions text not null default '[]',     -- JSON array of strings
    is_active boolean not null default true,
    created_at bigint not null,
    updated_at bigint not null
);

-- One row per session (one login on one device). The session also holds its refresh-token
-- family: only the current and the previous generation can be authenticated, so the row
-- never grows with the number of refreshes (docs/ARCHITECTURE.md, "Refresh tokens").
create table sessions (
    id text primary key,                        -- UUID v7; also the refresh token's lookup id
    user_id text not null references users (id) on delete cascade,
    refresh_hash blob not null,                 -- SHA-256 of the current refresh secret
    generation bigint not null default 0,       -- rotations so far; the race guard of a rotation
    previous_hash blob,                         -- SHA-256 of the secret rotated away last
    rotated_at bigint,                          -- when previous_hash was rotated away
    sealed_successor blob,                      -- current token sealed under previous (grace only)
    refresh_expires_at bigint not null,         -- the current refresh token's expiry
    expires_at bigint,                          -- absolute cap (session_max_lifetime); null: none
    created_at bigint not null,
    last_active_at bigint not null,
    user_agent text,
    ip text,
    revoked_at bigint,                          -- null while the session is live
    revoked_reason text                         -- logout, password_changed, reuse_detected, …
);
create index sessions_by_user on sessions (user_id, last_active_at);

-- Signing keys for the asymmetric algorithms. At most one active key per algorithm: two
-- nodes racing on an empty database agree on one (insert-if-absent, then read back).
create table signing_keys (
    kid text primary key,                       -- RFC 7638 JWK thumbprint
    algorithm text not null,                    -- EdDSA, ES256 or RS256
    private_key text not null,                  -- PKCS#8 PEM
    state text not null,                        -- active, next or retired
    created_at bigint not null,
    retired_at bigint                           -- when it stopped signing; kept until tokens expire
);
create unique index signing_keys_one_active on signing_keys (algorithm) where state = 'active';

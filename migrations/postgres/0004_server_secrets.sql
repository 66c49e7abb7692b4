-- Secrets every node must share that are not signing keys: today the key that binds CSRF
-- tokens to sessions (the cookie transport). Generated once by the first node to need it.
create table server_secrets (
    name text primary key,
    secret bytea not null,                      -- 32 random bytes
    created_at bigint not null
);

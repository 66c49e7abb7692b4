-- Email verification, password reset, email change and two-factor authentication
-- (docs/ARCHITECTURE.md, "Mail" and "Two-factor login"). Times are Unix milliseconds.
alter table users add column email_verified boolean not null default false;
alter table users add column mfa_enabled boolean not null default false;
-- Sessions opened with a second factor carry amr ["pwd", "otp"] in their access tokens.
alter table sessions add column mfa boolean not null default false;

-- Mail to send, written in the transaction of the change that causes it, so that a crash
-- between the request and the send loses nothing. A row holds no secret: a message that
-- carries a link gets its token when the sender takes it. A sender takes a row by setting
-- locked_until (one node at a time); a sent row is kept a week for operators, then purged.
create table outbox (
    id text primary key,                        -- UUID v7: creation order
    kind text not null,                         -- verify_email, reset_password, change_email, email_changed
    user_id text,                               -- null for reset_password (found by address at send time)
    recipient text not null,                    -- the normalised address
    data text not null default '{}',            -- JSON: what the template needs beyond the user
    created_at bigint not null,
    attempts bigint not null default 0,
    next_attempt_at bigint not null,
    locked_until bigint,
    sent_at bigint,                             -- delivered (or dropped: dropped_reason)
    dropped_reason text,                        -- no_account, address_changed, gave_up, …
    last_error text                             -- the SMTP failure of the last attempt
);
create index outbox_due on outbox (next_attempt_at) where sent_at is null;

-- Single-use link tokens (<id>.<secret>): only SHA-256 of the secret is kept. One live token
-- per user and purpose: issuing one deletes the older ones.
create table email_tokens (
    id text primary key,                        -- UUID v7, the token's lookup id
    user_id text not null references users (id) on delete cascade,
    purpose text not null,                      -- verify_email, reset_password, change_email
    secret_hash blob not null,
    email text not null,                        -- verify: the address verified; change: the new one
    credentials_version bigint not null,        -- reset: dies when the password changes
    created_at bigint not null,
    expires_at bigint not null
);
create index email_tokens_by_user on email_tokens (user_id, purpose);

-- TOTP (RFC 6238). secret is the seed, sealed under the key-encryption key when one is set
-- (kg-sealed:v1:…), else base32. confirmed_at is null while enrolment is pending.
create table totp (
    user_id text primary key references users (id) on delete cascade,
    secret text not null,
    created_at bigint not null,
    confirmed_at bigint,
    last_step bigint                            -- the last accepted time step: a code works once
);

-- Recovery codes, single-use; SHA-256 of each (80 random bits: no fast search).
create table recovery_codes (
    user_id text not null references users (id) on delete cascade,
    code_hash blob not null,
    used_at bigint,
    primary key (user_id, code_hash)
);

-- A login waiting for its second factor: mfa_token = <id>.<secret>; five attempts.
create table mfa_challenges (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    secret_hash blob not null,
    credentials_version bigint not null,
    attempts bigint not null default 0,
    created_at bigint not null,
    expires_at bigint not null
);

-- The audit log: one row per security-relevant event. Never a token, password or hash.
create table audit_events (
    id text primary key,                        -- UUID v7: time-ordered, also the page cursor
    at bigint not null,                         -- ms since the Unix epoch
    event text not null,                        -- login_succeeded, refresh_token_reused, …
    user_id text,                               -- no foreign key: events outlive deleted users
    session_id text,
    ip text,
    user_agent text,
    outcome text not null,                      -- success or failure
    reason text                                 -- why it failed, or what caused it
);
create index audit_events_by_user on audit_events (user_id, id);
create index audit_events_by_event on audit_events (event, id);
create index audit_events_by_at on audit_events (at);

-- The feed of ended sessions for resource servers (GET /oauth/revocations): every session
-- that stops being live by revocation (logout, reuse detection, disable, password change…)
-- or by deletion (its user deleted) gets a row, written by the database itself so that no
-- code path can forget it. `at` is the database's clock in Unix milliseconds: one clock for
-- every node, and the feed's cursor.
create table revocations (
    seq integer primary key autoincrement,
    session_id text not null,
    at bigint not null default (cast(round((julianday('now') - 2440587.5) * 86400000) as integer))
);
create index revocations_by_time on revocations (at);

create trigger sessions_revoked_feed after update of revoked_at on sessions
when old.revoked_at is null and new.revoked_at is not null
begin
    insert into revocations (session_id) values (new.id);
end;

create trigger sessions_deleted_feed after delete on sessions
when old.revoked_at is null
begin
    insert into revocations (session_id) values (old.id);
end;

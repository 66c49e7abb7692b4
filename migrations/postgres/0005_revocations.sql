-- The feed of ended sessions for resource servers (GET /oauth/revocations): every session
-- that stops being live by revocation (logout, reuse detection, disable, password change…)
-- or by deletion (its user deleted) gets a row, written by the database itself so that no
-- code path can forget it. `at` is the database's clock in Unix milliseconds: one clock for
-- every node, and the feed's cursor.
create table revocations (
    seq bigserial primary key,
    session_id text not null,
    at bigint not null default (extract(epoch from clock_timestamp()) * 1000)::bigint
);
create index revocations_by_time on revocations (at);

create function keygate_session_ended() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        if old.revoked_at is null then
            insert into revocations (session_id) values (old.id);
        end if;
        return old;
    end if;
    if old.revoked_at is null and new.revoked_at is not null then
        insert into revocations (session_id) values (new.id);
    end if;
    return new;
end;
$$;

create trigger sessions_ended_feed after update of revoked_at or delete on sessions
for each row execute function keygate_session_ended();

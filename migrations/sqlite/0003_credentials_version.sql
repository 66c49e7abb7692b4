-- Bumped by every change that must end the sessions a login could still be opening (a new
-- password, a disabled account): a session is inserted only if the version its login read
-- with the password hash is still the user's.
alter table users add column credentials_version bigint not null default 0;

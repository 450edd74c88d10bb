-- The api's own schema (search_path is set to it by the migrator): users, refresh tokens,
-- the desired state it last wrote to control.v1, and the audit of every control change.

CREATE TABLE users (
    username        text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{3,64}$'),
    password_hash   text NOT NULL,
    role            text NOT NULL CHECK (role IN ('admin', 'viewer')),
    token_version   integer NOT NULL DEFAULT 0,
    failed_logins   integer NOT NULL DEFAULT 0,
    first_failed_at timestamptz,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);

-- One row per issued refresh token; a refresh rotates (revokes the old, issues a new one).
CREATE TABLE refresh_tokens (
    jti         text PRIMARY KEY,
    username    text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (username);

-- The desired state last written to control.v1, per service (the version counter lives here).
CREATE TABLE control_state (
    service       text PRIMARY KEY,
    desired_state text NOT NULL CHECK (desired_state IN ('running', 'stopped')),
    config        jsonb NOT NULL DEFAULT '{}'::jsonb,
    version       bigint NOT NULL,
    updated_by    text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Who changed what, when: append-only.
CREATE TABLE control_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    username    text NOT NULL,
    action      text NOT NULL,
    service     text NOT NULL,
    version     bigint NOT NULL,
    before      jsonb,
    after       jsonb NOT NULL,
    client_ip   text,
    trace_id    text NOT NULL DEFAULT ''
);
CREATE INDEX control_audit_service_at ON control_audit (service, at DESC);

-- Security events (logins, lockouts, password changes), append-only.
CREATE TABLE auth_events (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    username  text NOT NULL,
    event     text NOT NULL,
    client_ip text
);
CREATE INDEX auth_events_at ON auth_events (at DESC);

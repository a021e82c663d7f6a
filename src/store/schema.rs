//! The store's schema as embedded migrations (applied in order, tracked in
//! SQLite's `user_version`).
//!
//! A migration that shipped is never edited: a schema change is a new entry
//! at the end of [`MIGRATIONS`].

use rusqlite_migration::{M, Migrations};

/// Every table is `STRICT`: a value of the wrong type is an error, not a
/// silent conversion. `hosts.operation_id` points at the open operation and
/// is NULL exactly when the host is not in an active state.
const V1: &str = "
CREATE TABLE hosts (
    name                TEXT PRIMARY KEY NOT NULL,
    mac                 TEXT NOT NULL,
    state               TEXT NOT NULL,
    observed_generation INTEGER NOT NULL DEFAULT 0,
    since_ms            INTEGER NOT NULL,
    operation_id        INTEGER REFERENCES operations(id),
    last_error          TEXT,
    retired_at          INTEGER
) STRICT;

-- Deadline checks and status counts look only at these.
CREATE INDEX hosts_open_operation ON hosts(operation_id) WHERE operation_id IS NOT NULL;
CREATE INDEX hosts_state ON hosts(state) WHERE retired_at IS NULL;

CREATE TABLE operations (
    id               INTEGER PRIMARY KEY,
    host             TEXT NOT NULL REFERENCES hosts(name),
    generation       INTEGER NOT NULL,
    started_ms       INTEGER NOT NULL,
    ended_ms         INTEGER,
    outcome          TEXT,
    reason           TEXT,
    token_hash       BLOB NOT NULL,
    public_key       TEXT NOT NULL,
    private_key      TEXT,
    dmi_uuid         TEXT,
    answer_served_ms INTEGER,
    machine_id       TEXT,
    mgmt_address     TEXT,
    ssh_host_keys    TEXT,
    phone_home_ip    TEXT,
    hardware_id      TEXT
) STRICT;
CREATE INDEX operations_host ON operations(host, id);

CREATE TABLE transitions (
    id           INTEGER PRIMARY KEY,
    host         TEXT NOT NULL REFERENCES hosts(name),
    operation_id INTEGER REFERENCES operations(id),
    at_ms        INTEGER NOT NULL,
    from_state   TEXT NOT NULL,
    to_state     TEXT NOT NULL,
    event        TEXT NOT NULL,
    cause        TEXT NOT NULL
) STRICT;
CREATE INDEX transitions_host ON transitions(host, id);

CREATE TABLE notes (
    id           INTEGER PRIMARY KEY,
    host         TEXT NOT NULL REFERENCES hosts(name),
    operation_id INTEGER REFERENCES operations(id),
    at_ms        INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    message      TEXT NOT NULL
) STRICT;
CREATE INDEX notes_host ON notes(host, id);

CREATE TABLE unknown_machines (
    mac           TEXT PRIMARY KEY NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    count         INTEGER NOT NULL
) STRICT;
CREATE INDEX unknown_machines_last_seen ON unknown_machines(last_seen_ms);
";

const STEPS: &[M<'static>] = &[M::up(V1).foreign_key_check()];

/// The schema, oldest migration first.
pub const MIGRATIONS: Migrations<'static> = Migrations::from_slice(STEPS);

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::MIGRATIONS.validate().is_ok());
    }
}

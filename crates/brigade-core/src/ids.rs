//! Identifiers: UUIDv7 text, so ids sort by creation time.

/// A fresh id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

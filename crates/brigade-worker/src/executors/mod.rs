//! Built-in task kinds.

pub mod code;

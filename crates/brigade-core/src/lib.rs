//! The brigade domain: the rules of tasks, jobs and workers as pure functions.
//!
//! Nothing here does I/O or reads the clock by itself: time is passed in (see
//! [`clock`]), randomness too, so every rule is unit-tested without a database
//! or a network. The store applies these rules inside its transactions; the
//! server and the worker use them to decide.

pub mod callback;
pub mod clock;
pub mod dispatch;
pub mod graph;
pub mod ids;
pub mod lifecycle;
pub mod limits;
pub mod retention;
pub mod schedule;
pub mod trace;
pub mod transition;
pub mod unique;
pub mod validate;

pub use clock::{Clock, SystemClock, from_ms, to_ms};
pub use lifecycle::{Failure, job_state, job_state_skipping};
pub use validate::{Limits, NewJob, NewTask};

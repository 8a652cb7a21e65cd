//! The conformance cases: every [`Store`](brigade_store::Store) method, on a
//! fresh store, asserting what a user of the store would notice. Each case is
//! listed in [`conformance_tests!`](crate::common::conformance_tests), which
//! runs it on every engine.

#![deny(
    dead_code,
    reason = "a case missing from conformance_tests! runs nowhere"
)]

pub mod basics;
pub mod callbacks;
pub mod concurrency;
pub mod flow;
pub mod graphs;
pub mod jobs;
pub mod lifecycle;
pub mod limits;
pub mod logs;
pub mod queues;
pub mod results;
pub mod retention;
pub mod schedules;
pub mod submit;
pub mod tasks;
pub mod workers;

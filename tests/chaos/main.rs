//! Fault injection: the real binary under faults and load. Each scenario
//! drives thousands of `echo` tasks through real server and worker processes
//! while it kills, freezes, cuts off or starves them, then checks through the
//! API that nothing acknowledged was lost, nothing ran twice and nothing is
//! stuck (see `invariants`). See docs/reliability.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is a failed test

mod invariants;
mod load;
mod proxy;

mod database;
mod disk;
mod graphs;
mod network;
mod server;
mod workers;

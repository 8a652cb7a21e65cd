//! End-to-end tests: the real `brigade` binary as server and worker processes,
//! HTTP on 127.0.0.1, a real database (the processes come from
//! `brigade-testkit`). One test binary keeps link time down.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is a failed test

mod bench;
mod callbacks;
mod config;
mod faults;
mod flow;
mod input;
mod judge;
mod limits;
mod maintenance;
mod observability;
mod operations;
mod otlp;
mod running;
mod schedules;
mod security;
mod servers;
mod upgrade;
mod workflows;

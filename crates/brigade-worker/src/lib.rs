//! The brigade worker runtime as a library: lease loop, handler registry,
//! result batching, heartbeats and graceful shutdown. `brigade worker` is
//! this runtime with the built-in kinds of [`executors`]; a program of your
//! own registers its kinds in a [`Registry`] and runs the same loop.

pub mod executors;
pub mod handler;
pub mod load;
pub mod runtime;
pub mod sandbox;
pub mod trace;

pub use handler::{
    FnHandler, Handler, Registry, TaskContext, TaskFailure, TaskFlow, TaskLog, TaskOutcome,
};
pub use runtime::{Worker, WorkerConfig, WorkerError};

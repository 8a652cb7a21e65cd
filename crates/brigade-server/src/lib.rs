//! The brigade coordinator: the HTTP API over the store, the long-poll
//! dispatcher, periodic duties, live events and metrics.

pub mod app;
pub mod auth;
pub mod bus;
pub mod callbacks;
pub mod config;
pub mod dashboard;
pub mod dispatcher;
pub mod duties;
pub mod error;
pub mod extract;
pub mod heartbeats;
pub mod history;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod state;
pub mod trace;

pub use app::{RunningServer, StartError, start, start_with};
pub use config::ServerConfig;

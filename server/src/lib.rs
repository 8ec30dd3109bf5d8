//! Weft's server: the workflow engine, its durable store, and the HTTP surface.
//!
//! - [`engine`]: graphs, tools, the step loop and the presets. Knows no HTTP, no SQL.
//! - [`store`]: the [`store::Store`] trait and its embedded SQLite implementation.
//! - [`runner`]: starts runs, records and publishes each step, resumes interrupted runs.
//! - [`api`]: the REST routes and the run WebSocket.
//! - [`startup`], [`config`], [`telemetry`]: putting it together.
//!
//! The binary only reads [`config::Settings`] and calls [`startup::Application`]; tests
//! build the same `Application` on port 0 with a fresh database.

// Leptos views are deeply nested types; the run page needs more room than the default.
#![recursion_limit = "256"]

pub mod api;
pub mod config;
pub mod engine;
pub mod ids;
pub mod runner;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod ui;

//! Weft's server: the workflow engine, its durable store, and the HTTP surface.
//!
//! - [`engine`]: graphs, the tool trait, the step loop. Knows no HTTP, no SQL.
//! - [`tools`]: the tools and presets Weft ships (Code Review, Summarization, Data
//!   Quality, and small building blocks), users of the engine like any other.
//! - [`layout`]: graphs laid out for drawing, for the API and the UI.
//! - [`llm`]: calling language models (OpenAI-compatible, streamed), for the `llm` tool.
//! - [`lifecycle`]: a run's statuses and the legal moves between them.
//! - [`store`]: the [`store::Store`] trait and its embedded SQLite implementation.
//! - [`runner`]: starts runs, records and publishes each step, resumes interrupted runs.
//! - [`api`]: the REST routes and the run WebSocket.
//! - [`assets`]: the site's static files, hashed, compressed and cached.
//! - [`auth`]: API tokens, principals, and what each may see.
//! - [`meters`]: the metrics `GET /metrics` shows.
//! - [`startup`], [`config`], [`telemetry`]: putting it together.
//!
//! The binary only reads [`config::Settings`] and calls [`startup::Application`]; tests
//! build the same `Application` on port 0 with a fresh database.

// Leptos views are deeply nested types; the run page needs more room than the default.
#![recursion_limit = "256"]

pub mod api;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod config;
pub mod engine;
pub mod ids;
pub mod layout;
pub mod lifecycle;
pub mod llm;
pub mod meters;
pub mod runner;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod ui;

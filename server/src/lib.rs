//! The Dispatch agent server: conversations and streaming turns over HTTP, tools (`sh`,
//! `ssh`), a SQLite conversation store with repair-and-seal, and telemetry wired in.
//!
//! The library exposes [`app`] (the axum router over an [`AppState`]) and [`serve`]; the
//! binary's `main` parses [`Config`], opens the journal, starts the memory sampler with the
//! server's [`Activity`] as its load source, builds the state and serves. jemalloc is the
//! global allocator of the binary only.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use dispatch_server::{Activity, AppState, Settings, app};
//! use dispatch_telemetry::journal::JournalBuilder;
//!
//! let settings = Settings::for_var_dir(std::path::Path::new("./var"));
//! let journal = JournalBuilder::new(&settings.journal_dir).open()?;
//! let activity = Arc::new(Activity::new(settings.max_turns_in_flight, settings.max_queue_depth));
//! let (state, _repairs) = AppState::start(settings, journal, activity, None)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, app(state)).await?;
//! # Ok(())
//! # }
//! ```

pub mod activity;
pub mod admin;
pub mod api;
pub mod auth;
pub mod collector;
pub mod config;
pub mod error;
pub mod extract;
pub mod faults;
pub mod ids;
pub mod limiter;
pub mod message;
pub mod metrics;
pub mod pressure;
pub mod provider;
pub mod server;
pub mod stall;
pub mod start_lock;
pub mod state;
pub mod store;
pub mod symbols;
pub mod sys;
pub mod telemetry;
pub mod token;
pub mod tools;
pub mod turn;
pub mod ui;

pub use activity::Activity;
pub use api::app;
pub use config::{Config, Settings};
pub use error::ApiError;
pub use server::{StopReport, serve, stop_signal};
pub use state::{AppState, StartError};

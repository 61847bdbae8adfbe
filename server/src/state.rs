//! The shared state behind every handler and turn task.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use dispatch_journal::Record;
use dispatch_journal::record::{ConversationRepair, TurnEnd};
use dispatch_telemetry::journal::Journal;
use dispatch_telemetry::memory::Sampler;

use crate::activity::Activity;
use crate::collector::CollectorStatus;
use crate::config::{ProviderKind, Settings};
use crate::faults::Faults;
use crate::pressure::{Breaker, Limits};
use crate::provider::{OpenAiProvider, Provider, ProviderError, SimProvider};
use crate::store::{RepairReport, Store, StoreError};
use crate::telemetry::CrashMonitorStatus;
use crate::token::{ApiToken, TokenError};
use crate::tools::{ToolSettings, Tools};

/// A failure while building the state at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The conversation store could not be opened or repaired.
    #[error("conversation store {path}: {source}")]
    Store {
        /// Database path.
        path: String,
        /// Underlying error.
        source: StoreError,
    },
    /// The provider is misconfigured.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// No usable API token.
    #[error("API token: {0}")]
    Token(#[from] TokenError),
}

impl StartError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store { source, .. } => source.code(),
            Self::Provider(e) => e.code(),
            Self::Token(e) => e.code(),
        }
    }
}

/// Everything handlers and turns share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

/// The fields of [`AppState`].
pub struct StateInner {
    /// Resolved settings.
    pub settings: Settings,
    /// Conversation store.
    pub store: Store,
    /// Model provider.
    pub provider: Provider,
    /// Tools.
    pub tools: Tools,
    /// Limiter, running turns, counters; the sampler's load source.
    pub activity: Arc<Activity>,
    /// Journal writer.
    pub journal: Journal,
    /// Memory sampler (absent only when turned off for a benchmark).
    pub sampler: Option<Sampler>,
    /// Process start, for uptime.
    pub started: Instant,
    /// Whether the crash monitor is attached (for `/health`).
    pub crash_monitor: CrashMonitorStatus,
    /// The embedded collector's state (for `/health`).
    pub collector: CollectorStatus,
    /// The memory-pressure breaker (for turn admission, `/health`, `/metrics`).
    pub pressure: Arc<Breaker>,
    /// Fault injection state (admin API).
    pub faults: Faults,
    /// The token `/v1` requests must carry.
    pub api_token: ApiToken,
    /// Whether the token file was created at this start (the first one).
    pub api_token_created: bool,
    /// The TCP address the server is bound to, once `serve` has bound it (for the `Host`
    /// check).
    pub bound: std::sync::OnceLock<std::net::SocketAddr>,
}

/// How the process is supervised, given to [`AppState::start_supervised`] by `main`.
#[derive(Debug, Clone)]
pub struct Supervision {
    /// The crash monitor's status.
    pub crash_monitor: CrashMonitorStatus,
    /// The embedded collector's state.
    pub collector: CollectorStatus,
    /// The memory-pressure breaker the sampler feeds (none: one without limits).
    pub pressure: Option<Arc<Breaker>>,
}

impl Default for Supervision {
    fn default() -> Supervision {
        Supervision {
            crash_monitor: CrashMonitorStatus::unsupervised(),
            collector: CollectorStatus::default(),
            pressure: None,
        }
    }
}

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    /// Opens the store, runs repair-and-seal (journaling one `conversation.repair` per repair
    /// and a `turn.end` with outcome `sealed` per sealed turn), and builds the provider and
    /// tools. `activity` is the sampler's load source, shared.
    ///
    /// # Errors
    /// The store cannot be opened or repaired, or the provider is misconfigured.
    pub fn start(
        settings: Settings,
        journal: Journal,
        activity: Arc<Activity>,
        sampler: Option<Sampler>,
    ) -> Result<(AppState, RepairReport), StartError> {
        AppState::start_supervised(settings, journal, activity, sampler, Supervision::default())
    }

    /// [`AppState::start`], with what `main` knows about the crash monitor and the embedded
    /// collector (reported by `/health`).
    ///
    /// # Errors
    /// As [`AppState::start`].
    pub fn start_supervised(
        settings: Settings,
        journal: Journal,
        activity: Arc<Activity>,
        sampler: Option<Sampler>,
        supervision: Supervision,
    ) -> Result<(AppState, RepairReport), StartError> {
        let store_err =
            |source| StartError::Store { path: settings.db.display().to_string(), source };
        let (api_token, api_token_created) =
            ApiToken::resolve(settings.api_token.as_ref().map(|t| t.expose()), &settings.var_dir)?;
        let store = Store::open(&settings.db).map_err(store_err)?;
        let report = store.repair_and_seal().map_err(store_err)?;
        for r in &report.repairs {
            journal.emit(Record::ConversationRepair(ConversationRepair {
                conversation: r.conversation.clone(),
                action: r.action.to_owned(),
                turn: r.turn.clone(),
                detail: Some(r.detail.clone()),
            }));
        }
        for (conversation, turn) in &report.sealed_turns {
            journal.emit(Record::TurnEnd(TurnEnd {
                conversation: Some(conversation.clone()),
                turn: Some(turn.clone()),
                outcome: Some("sealed".to_owned()),
                ..TurnEnd::default()
            }));
        }
        let provider = match settings.provider {
            ProviderKind::Sim => {
                Provider::Sim(SimProvider::new(settings.sim_tokens_per_sec, &settings.model))
            }
            ProviderKind::Openai => Provider::OpenAi(Box::new(OpenAiProvider::new(
                &settings.openai_base_url,
                settings.openai_api_key.as_ref().map(|k| k.expose().to_owned()),
                settings.openai_ca_file.as_deref(),
                &settings.model,
                settings.provider_idle_timeout,
            )?)),
        };
        let tools = Tools::new(ToolSettings {
            workdir: settings.tool_workdir.clone(),
            var_dir: settings.var_dir.clone(),
            sandbox: settings.tool_sandbox,
            require_sandbox: settings.tools_require_sandbox,
            env_allow: settings.tool_env_allow.clone(),
            output_file_max_bytes: settings.tool_output_file_max_bytes,
            timeout: settings.tool_timeout,
            max_bytes: settings.tool_output_max_bytes,
            max_lines: settings.tool_output_max_lines,
            output_dir: settings.tool_output_dir.clone(),
            ssh_connect_timeout_s: settings.ssh_connect_timeout_s,
            ssh_program: "ssh".into(),
            fault_tools: settings.fault_tools,
            output_budget_bytes: settings.tool_output_budget_bytes,
        });
        let pressure = supervision
            .pressure
            .unwrap_or_else(|| Breaker::new(Limits::default(), journal.clone()));
        let state = AppState(Arc::new(StateInner {
            settings,
            store,
            provider,
            tools,
            activity,
            journal,
            sampler,
            started: Instant::now(),
            crash_monitor: supervision.crash_monitor,
            collector: supervision.collector,
            pressure,
            faults: Faults::default(),
            api_token,
            api_token_created,
            bound: std::sync::OnceLock::new(),
        }));
        Ok((state, report))
    }
}

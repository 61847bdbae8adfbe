//! Reading `DISPATCH_*` settings from the environment, with errors that name the variable.

use std::str::FromStr;
use std::time::Duration;

/// A malformed `DISPATCH_*` variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The value does not parse as what the variable takes.
    #[error("{var}={value:?}: {expected}")]
    Invalid {
        /// Variable name.
        var: &'static str,
        /// The value found.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

impl ConfigError {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Invalid { .. } => "config_invalid",
        }
    }
}

/// Reads `var` and parses it; absent or empty is `Ok(None)`.
pub fn env_parse<T: FromStr>(
    var: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ConfigError> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => {
            v.trim().parse().map(Some).map_err(|_| ConfigError::Invalid { var, value: v, expected })
        }
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(ConfigError::Invalid {
            var,
            value: v.to_string_lossy().into_owned(),
            expected: "valid UTF-8",
        }),
    }
}

/// Reads a millisecond duration from `var`.
pub fn env_millis(var: &'static str) -> Result<Option<Duration>, ConfigError> {
    Ok(env_parse::<u64>(var, "a whole number of milliseconds")?.map(Duration::from_millis))
}

/// Reads a string from `var`; absent or empty is `None`.
pub fn env_string(var: &'static str) -> Result<Option<String>, ConfigError> {
    env_parse::<String>(var, "a string")
}

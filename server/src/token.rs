//! The API token: every `/v1` request carries it as `Authorization: Bearer <token>`.
//!
//! Where it comes from: `DISPATCH_API_TOKEN` (or `--api-token`) when set; otherwise the file
//! `<var dir>/api-token`, created 0600 with 32 random bytes (64 hex characters) at the first
//! start and read at every later one. A token shorter than [`MIN_TOKEN_BYTES`] is refused. The
//! comparison is constant-time over SHA-256 digests, so neither the length nor a prefix of the
//! token shows in response timings.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom as _, SystemRandom};

/// Shortest token accepted, bytes.
pub const MIN_TOKEN_BYTES: usize = 32;
/// Name of the generated token file below the var directory.
pub const TOKEN_FILE_NAME: &str = "api-token";

/// The API token, held as its digest (the token itself is never kept nor printed).
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
    /// Where it came from, for the start-up line (`DISPATCH_API_TOKEN` or the file's path).
    pub source: String,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The configured token is too short.
    #[error("{source_name}: the API token has {len} bytes; at least {MIN_TOKEN_BYTES} are needed")]
    TooShort {
        /// Where it came from.
        source_name: String,
        /// Its length.
        len: usize,
    },
    /// The token file could not be read or created, or is unsafe to use.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl TokenError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "api_token_too_short",
            Self::File { .. } => "api_token_file",
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest(&SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ApiToken {
    /// A token from its text; `source_name` says where it came from (for errors).
    ///
    /// # Errors
    /// Shorter than [`MIN_TOKEN_BYTES`].
    pub fn new(token: &str, source_name: &str) -> Result<ApiToken, TokenError> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(TokenError::TooShort {
                source_name: source_name.to_owned(),
                len: token.len(),
            });
        }
        Ok(ApiToken { digest: sha256(token.as_bytes()), source: source_name.to_owned() })
    }

    /// The configured token, or the var directory's token file (created at the first start).
    /// Returns the token and whether the file was just created.
    ///
    /// # Errors
    /// A configured token is too short; the file cannot be read or created, is not a regular
    /// file owned by this user, or is readable by others.
    pub fn resolve(
        configured: Option<&str>,
        var_dir: &Path,
    ) -> Result<(ApiToken, bool), TokenError> {
        if let Some(t) = configured {
            return Ok((ApiToken::new(t, "DISPATCH_API_TOKEN")?, false));
        }
        let path = var_dir.join(TOKEN_FILE_NAME);
        let err = |reason: String| TokenError::File { path: path.clone(), reason };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => {
                if !meta.file_type().is_file() {
                    return Err(err("not a regular file (a symlink or a directory?)".into()));
                }
                // The var directory is this user's (the server created it or was given it).
                let own_uid = std::fs::metadata(var_dir).map(|m| m.uid()).unwrap_or(meta.uid());
                if meta.uid() != own_uid {
                    return Err(err(format!(
                        "owned by uid {}, not the var dir's owner",
                        meta.uid()
                    )));
                }
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(err(format!(
                        "mode {:o} lets other users read it; chmod 600 it",
                        meta.permissions().mode() & 0o777
                    )));
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| err(format!("cannot read it: {e}")))?;
                Ok((ApiToken::new(&text, &path.display().to_string())?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| err("the system's random source failed".into()))?;
                let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| err(format!("cannot create it: {e}")))?;
                f.write_all(format!("{text}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| err(format!("cannot write it: {e}")))?;
                Ok((ApiToken::new(&text, &path.display().to_string())?, true))
            }
            Err(e) => Err(err(format!("cannot read it: {e}"))),
        }
    }

    /// Whether `presented` is the token: constant-time over the two digests.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let other = sha256(presented);
        let diff = self.digest.iter().zip(other.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // `black_box` keeps the optimiser from turning the fold into an early exit.
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiToken(<redacted>, from {})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tokens_are_refused_and_long_ones_match_exactly() {
        assert!(matches!(ApiToken::new("short", "x"), Err(TokenError::TooShort { len: 5, .. })));
        let t = ApiToken::new(&"a".repeat(32), "x").unwrap();
        assert!(t.matches("a".repeat(32).as_bytes()));
        assert!(!t.matches("a".repeat(31).as_bytes()));
        assert!(!t.matches(format!("{}b", "a".repeat(31)).as_bytes()));
        assert!(!format!("{t:?}").contains("aaaa"));
    }

    #[test]
    fn the_file_is_created_once_0600_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let (a, created) = ApiToken::resolve(None, d.path()).unwrap();
        assert!(created);
        let path = d.path().join(TOKEN_FILE_NAME);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        assert!(a.matches(text.trim().as_bytes()));
        let (b, created) = ApiToken::resolve(None, d.path()).unwrap();
        assert!(!created);
        assert!(b.matches(text.trim().as_bytes()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ApiToken::resolve(None, d.path()).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}

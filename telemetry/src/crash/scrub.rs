//! Secret scrubbing of minidumps: which bytes are secrets (by the name they are stored under
//! and by their shape), and masking them in a dump file without ever rewriting it in place.
//!
//! Secrets are collected from the process's environment and command line (the monitor's own,
//! which its child inherited, and the copies in the dump's `LinuxEnviron` and `LinuxCmdLine`
//! streams), then every occurrence of each anywhere in the dump (heap, stacks, the streams) is
//! overwritten with `*`, keeping every offset so the dump still parses. Shapes that are
//! specific enough to be safe on binary data (bearer tokens, `scheme://user:pass@`, `sk-...`
//! style API keys) are also searched for in the whole dump.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::dump::{DUMP_EXTENSION, SCRUBBING_SUFFIX, UNSCRUBBED_SUFFIX};

/// Secrets shorter than this are not searched for in the whole dump (masking every `abc` would
/// wreck unrelated memory); in the dump's environment and command-line streams they are still
/// masked where they stand.
pub const MIN_SECRET_BYTES: usize = 4;

/// Words that make an environment variable (or a `--flag`, dashes read as `_`) secret-looking.
const SECRET_NAME_WORDS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASS", // PASSWORD, PASSWD, PASSPHRASE, DB_PASS
    "KEY",
    "DSN",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "COOKIE",
    "SESSION",
    "SIGNATURE",
    "DATABASE_URL",
];

/// Prefixes of well-known API key formats (OpenAI, GitHub, GitLab, Slack).
const KEY_PREFIXES: &[&[u8]] =
    &[b"sk-", b"ghp_", b"gho_", b"ghs_", b"github_pat_", b"glpat-", b"xoxb-", b"xoxp-"];

/// Token characters after a key prefix or `Bearer ` before it counts as a secret.
const MIN_SHAPED_TOKEN_BYTES: usize = 8;

/// A whole value this long, of token characters, with letters and digits and at least this
/// much Shannon entropy per byte, is a secret whatever its name.
const MIN_ENTROPY_TOKEN_BYTES: usize = 24;
const MIN_TOKEN_BITS_PER_BYTE: f64 = 3.5;

/// Variables the monitor sets for its child (socket name, boot id, pid): random-looking, and
/// not secrets; the boot id in a dump ties it to its journal.
const MONITOR_VARS: &[&str] = &[super::ENV_SOCKET, super::ENV_BOOT, super::ENV_MONITOR_PID];

/// Whether an environment variable's name (or a command-line flag's, `--admin-token` reads as
/// `ADMIN_TOKEN`) looks like it holds a secret.
pub fn is_secret_name(name: &OsStr) -> bool {
    let upper: String = name
        .to_string_lossy()
        .trim_start_matches('-')
        .chars()
        .map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() })
        .collect();
    !MONITOR_VARS.contains(&upper.as_str()) && SECRET_NAME_WORDS.iter().any(|w| upper.contains(w))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
}

/// Each `scheme://userinfo@` in `s`: the range of the password (after the first
/// `:` of the userinfo), or of the whole userinfo when it has no `:` (a token used as user).
fn url_credentials(s: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(p) = find(&s[i..], b"://") {
        let at = i + p;
        // A scheme: at least one letter right before `://`.
        let scheme_ok = at > 0 && s[at - 1].is_ascii_alphanumeric();
        let start = at + 3;
        let mut end = start;
        while end < s.len() && !matches!(s[end], b'@' | b'/' | b'?' | b'#' | b' ' | 0 | b'\n') {
            if !(s[end].is_ascii_graphic()) {
                break;
            }
            end += 1;
        }
        if scheme_ok && end < s.len() && s[end] == b'@' && end > start {
            let userinfo = start..end;
            match s[userinfo.clone()].iter().position(|&b| b == b':') {
                Some(c) if start + c + 1 < end => found.push(start + c + 1..end),
                Some(_) => {}
                None => found.push(userinfo),
            }
        }
        i = start;
    }
    found
}

/// `Bearer <token>` / `Basic <token>` (any case): the token's range.
fn auth_schemes(s: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    for scheme in [&b"bearer "[..], b"basic ", b"token "] {
        let mut i = 0;
        while i + scheme.len() <= s.len() {
            if s[i..i + scheme.len()].eq_ignore_ascii_case(scheme) {
                let start = i + scheme.len();
                let end = token_end(s, start);
                if end - start >= MIN_SHAPED_TOKEN_BYTES {
                    found.push(start..end);
                }
                i = end.max(i + 1);
            } else {
                i += 1;
            }
        }
    }
    found
}

/// `sk-...`, `ghp_...` and the like: the whole key's range.
fn prefixed_keys(s: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    for prefix in KEY_PREFIXES {
        let mut i = 0;
        while let Some(p) = find(&s[i..], prefix) {
            let start = i + p;
            // Not the middle of a longer word (`task-123`, `disk-...`).
            let boundary = start == 0 || !s[start - 1].is_ascii_alphanumeric();
            let end = token_end(s, start + prefix.len());
            if boundary && end - (start + prefix.len()) >= MIN_SHAPED_TOKEN_BYTES {
                found.push(start..end);
            }
            i = end.max(start + 1);
        }
    }
    found
}

fn token_end(s: &[u8], from: usize) -> usize {
    let mut end = from;
    while end < s.len() && is_token_byte(s[end]) {
        end += 1;
    }
    end
}

/// Whether a whole value is a long random-looking token (an API key with an innocent name).
pub(crate) fn is_high_entropy_token(v: &[u8]) -> bool {
    if v.len() < MIN_ENTROPY_TOKEN_BYTES
        || !v.iter().all(|&b| is_token_byte(b))
        // Paths and flags are not tokens.
        || matches!(v.first(), Some(b'/' | b'.' | b'~' | b'-'))
        || !v.iter().any(u8::is_ascii_digit)
        || !v.iter().any(u8::is_ascii_alphabetic)
    {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in v {
        counts[b as usize] += 1;
    }
    let n = v.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits >= MIN_TOKEN_BITS_PER_BYTE
}

/// The secret parts of one string by shape alone (no name): URL credentials, auth-scheme
/// tokens, prefixed API keys, and the whole string if it is a long high-entropy token.
pub fn secret_shapes(s: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = url_credentials(s)
        .into_iter()
        .chain(auth_schemes(s))
        .chain(prefixed_keys(s))
        .map(|r| s[r].to_vec())
        .collect();
    if is_high_entropy_token(s) {
        out.push(s.to_vec());
    }
    out
}

/// The secrets in one environment entry: the whole value if the name is secret-looking (or it
/// is a `*_URL`/`*_URI` with credentials in it), plus whatever [`secret_shapes`] finds.
pub fn secret_env_values(name: &[u8], value: &[u8]) -> Vec<Vec<u8>> {
    if MONITOR_VARS.iter().any(|v| v.as_bytes() == name) {
        return Vec::new();
    }
    let mut out = secret_shapes(value);
    let upper = name.to_ascii_uppercase();
    let url_name = upper.ends_with(b"_URL") || upper.ends_with(b"_URI") || upper.ends_with(b"_DSN");
    if is_secret_name(OsStr::from_bytes(name)) || (url_name && !url_credentials(value).is_empty()) {
        out.push(value.to_vec());
    }
    out.retain(|v| !v.is_empty());
    out
}

/// The secrets on a command line: the value after a secret-looking flag (`--openai-api-key
/// X`, `--password X`), the value of `--secret-flag=X`, and what [`secret_shapes`] finds in any
/// argument.
pub fn secret_args(args: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        out.extend(secret_shapes(a));
        if a.len() > 1 && a[0] == b'-' {
            match a.iter().position(|&b| b == b'=') {
                Some(eq) => {
                    let (flag, value) = (&a[..eq], &a[eq + 1..]);
                    if is_secret_name(OsStr::from_bytes(flag)) && !value.is_empty() {
                        out.push(value.to_vec());
                    }
                    out.extend(secret_shapes(value));
                }
                None => {
                    if is_secret_name(OsStr::from_bytes(a))
                        && let Some(next) = args.get(i + 1)
                        && !next.starts_with(b"--")
                        && !next.is_empty()
                    {
                        out.push(next.to_vec());
                    }
                }
            }
        }
        i += 1;
    }
    out
}

/// Secrets of this process (environment and command line; the monitor's child inherited both).
pub(crate) fn process_secrets() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (k, v) in std::env::vars_os() {
        out.extend(secret_env_values(k.as_bytes(), v.as_bytes()));
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    out.extend(secret_args(&args));
    out
}

/// Overwrites every occurrence of each secret in `bytes` with `*`, keeping every offset (the
/// dump's layout stays valid). Secrets shorter than [`MIN_SECRET_BYTES`] are skipped. Returns
/// the number of occurrences scrubbed.
pub fn scrub(bytes: &mut [u8], secrets: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for s in secrets.iter().filter(|s| s.len() >= MIN_SECRET_BYTES) {
        let mut i = 0;
        while let Some(p) = find(&bytes[i..], s) {
            let at = i + p;
            bytes[at..at + s.len()].fill(b'*');
            n += 1;
            i = at + s.len();
        }
    }
    n
}

/// Masks, in place in `bytes`, the secret values in a NUL-separated `NAME=value` block (a
/// dump's environ stream) whatever their length, and returns them for the whole-dump pass.
fn scrub_environ_block(block: &mut [u8]) -> Vec<Vec<u8>> {
    let mut secrets = Vec::new();
    let mut start = 0;
    while start < block.len() {
        let end = block[start..].iter().position(|&b| b == 0).map_or(block.len(), |p| start + p);
        let entry = &block[start..end];
        if let Some(eq) = entry.iter().position(|&b| b == b'=') {
            let found = secret_env_values(&entry[..eq], &entry[eq + 1..]);
            let named = found.iter().any(|f| f.len() == entry.len() - eq - 1);
            secrets.extend(found);
            if named {
                block[start + eq + 1..end].fill(b'*');
            }
        }
        start = end + 1;
    }
    secrets
}

/// Masks, in a NUL-separated argv block (a dump's cmdline stream), the arguments that are
/// secrets, and returns them for the whole-dump pass.
fn scrub_cmdline_block(block: &mut [u8]) -> Vec<Vec<u8>> {
    let args: Vec<&[u8]> = block.split(|&b| b == 0).collect();
    let secrets = secret_args(&args);
    let mut offset = 0;
    let mut masked = Vec::new();
    for a in &args {
        let value_at = match a.iter().position(|&b| b == b'=') {
            Some(eq) if a.first() == Some(&b'-') => eq + 1,
            _ => 0,
        };
        if secrets.iter().any(|s| s[..] == a[..]) {
            masked.push(offset..offset + a.len());
        } else if value_at > 0 && secrets.iter().any(|s| s[..] == a[value_at..]) {
            masked.push(offset + value_at..offset + a.len());
        }
        offset += a.len() + 1;
    }
    for r in masked {
        block[r].fill(b'*');
    }
    secrets
}

/// Where a stream's bytes lie in the dump, if the dump parses and has it.
fn stream_range(bytes: &[u8], stream_type: u32) -> Option<std::ops::Range<usize>> {
    let dump = minidump::Minidump::read(bytes).ok()?;
    let s = dump.get_raw_stream(stream_type).ok()?;
    let start = (s.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
    (start + s.len() <= bytes.len()).then_some(start..start + s.len())
}

/// Scrubs a whole dump in memory: the environ and cmdline streams' secrets in place, then every
/// occurrence of those and of `extra` (the monitor's own secrets) anywhere, then the shapes
/// found in the raw bytes. Returns the number of places masked.
pub fn scrub_dump_bytes(bytes: &mut [u8], extra: &[Vec<u8>]) -> usize {
    use minidump::format::MINIDUMP_STREAM_TYPE as T;
    let mut secrets = extra.to_vec();
    if let Some(r) = stream_range(bytes, T::LinuxEnviron as u32) {
        secrets.extend(scrub_environ_block(&mut bytes[r]));
    }
    if let Some(r) = stream_range(bytes, T::LinuxCmdLine as u32) {
        secrets.extend(scrub_cmdline_block(&mut bytes[r]));
    }
    secrets.sort();
    secrets.dedup();
    // Longest first, so a secret containing a shorter one is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut n = scrub(bytes, &secrets);
    let shaped: Vec<std::ops::Range<usize>> = url_credentials(bytes)
        .into_iter()
        .chain(auth_schemes(bytes))
        .chain(prefixed_keys(bytes))
        .collect();
    for r in shaped {
        if bytes[r.clone()].iter().any(|&b| b != b'*') {
            bytes[r].fill(b'*');
            n += 1;
        }
    }
    n
}

/// The `.dmp` name an unscrubbed dump gets once scrubbed.
pub(crate) fn scrubbed_path(unscrubbed: &Path) -> Option<PathBuf> {
    let name = unscrubbed.file_name()?.to_str()?;
    let base = name.strip_suffix(UNSCRUBBED_SUFFIX)?;
    base.ends_with(&format!(".{DUMP_EXTENSION}")).then(|| unscrubbed.with_file_name(base))
}

/// Scrubs the unscrubbed dump at `path` (`*.dmp.unscrubbed`) into its `.dmp` name: the
/// scrubbed bytes go to a new temporary file, synced, renamed over the final name, then the
/// unscrubbed file is removed. The file is never rewritten in place, so a kill at any point
/// leaves either the unscrubbed file (scrubbed at the next start) or a complete scrubbed one.
/// Returns the scrubbed dump's path and the number of places masked.
pub(crate) fn scrub_file(path: &Path, extra: &[Vec<u8>]) -> io::Result<(PathBuf, usize)> {
    let final_path = scrubbed_path(path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a *.{DUMP_EXTENSION}{UNSCRUBBED_SUFFIX} file", path.display()),
        )
    })?;
    let mut bytes = fs::read(path)?;
    let n = scrub_dump_bytes(&mut bytes, extra);
    let tmp = path.with_file_name(format!(
        "{}{SCRUBBING_SUFFIX}",
        final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &final_path)?;
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok((final_path, n))
}

/// At monitor start, before anything reads the dump directory: removes temporary files of an
/// interrupted scrub and scrubs every dump a killed monitor left unscrubbed. Returns what was
/// done to each file (for the monitor's stderr).
pub(crate) fn scrub_leftovers(dir: &Path, extra: &[Vec<u8>]) -> Vec<(PathBuf, io::Result<usize>)> {
    let mut done = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return done };
    for e in entries.flatten() {
        let p = e.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
        if name.ends_with(SCRUBBING_SUFFIX) {
            let r = fs::remove_file(&p).map(|()| 0);
            done.push((p, r));
        } else if name.ends_with(UNSCRUBBED_SUFFIX) {
            let r = scrub_file(&p, extra).map(|(_, n)| n);
            done.push((p, r));
        }
    }
    done
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let p = hay[i..=hay.len() - needle.len()].iter().position(|&b| b == first)?;
        let at = i + p;
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(found: &[Vec<u8>], s: &str) -> bool {
        found.iter().any(|f| f == s.as_bytes())
    }

    #[test]
    fn scrubs_every_occurrence_keeping_length() {
        let mut b = b"xxOPENAI=sk-123456 and sk-123456 again".to_vec();
        let len = b.len();
        assert_eq!(scrub(&mut b, &[b"sk-123456".to_vec(), b"abc".to_vec()]), 2);
        assert_eq!(b.len(), len);
        assert_eq!(&b[..], b"xxOPENAI=********* and ********* again");
    }

    #[test]
    fn secret_names_by_pattern() {
        for n in [
            "OPENAI_API_KEY",
            "DISPATCH_ADMIN_TOKEN",
            "db_password",
            "DB_PASS",
            "PGPASSWORD",
            "AWS_SECRET_ACCESS_KEY",
            "SENTRY_DSN",
            "DATABASE_URL",
            "AUTHORIZATION",
            "COOKIE",
            "SESSION_ID",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "--openai-api-key",
            "--admin-token",
            "--api-token",
            "--password",
        ] {
            assert!(is_secret_name(OsStr::new(n)), "{n}");
        }
        for n in ["PATH", "HOME", "DISPATCH_VAR_DIR", "RUST_LOG", "--addr"] {
            assert!(!is_secret_name(OsStr::new(n)), "{n}");
        }
        let boot = b"2433bb1d-9e20-49dd-b8e8-005915d68e7b";
        assert!(is_high_entropy_token(boot));
        assert!(secret_env_values(crate::crash::ENV_BOOT.as_bytes(), boot).is_empty());
    }

    #[test]
    fn named_env_values_are_secret_whole() {
        let f = secret_env_values(b"DATABASE_URL", b"postgres://u:hunter2@db/x");
        assert!(has(&f, "postgres://u:hunter2@db/x") && has(&f, "hunter2"), "{f:?}");
        assert!(has(&secret_env_values(b"DB_PASS", b"letmein"), "letmein"));
        assert!(secret_env_values(b"HOME", b"/home/dispatch").is_empty());
    }

    #[test]
    fn urls_with_credentials() {
        let f = secret_env_values(b"REDIS_URL", b"redis://:s3cretpw@cache:6379/0");
        assert!(has(&f, "redis://:s3cretpw@cache:6379/0") && has(&f, "s3cretpw"), "{f:?}");
        assert!(has(&secret_shapes(b"x https://bob:pa55word@h/p y"), "pa55word"));
        assert!(has(&secret_shapes(b"https://ghtoken123@github.com/o/r"), "ghtoken123"));
        // No credentials, nothing to scrub.
        assert!(secret_env_values(b"UPSTREAM_URL", b"http://127.0.0.1:8080/v1").is_empty());
        assert!(secret_shapes(b"mailto:a@b and https://host/x@y").is_empty());
    }

    #[test]
    fn bearer_tokens() {
        let f = secret_shapes(b"authorization: Bearer abcDEF123456.xyz\r\n");
        assert!(has(&f, "abcDEF123456.xyz"), "{f:?}");
        assert!(has(
            &secret_shapes(b"Authorization: basic dXNlcjpwYXNzd29yZA=="),
            "dXNlcjpwYXNzd29yZA=="
        ));
        assert!(secret_shapes(b"bearer short").is_empty());
    }

    #[test]
    fn prefixed_api_keys() {
        let f = secret_shapes(b"key=sk-abcdef0123456789abcdef;");
        assert!(has(&f, "sk-abcdef0123456789abcdef"), "{f:?}");
        assert!(has(&secret_shapes(b"ghp_0123456789abcdefABCDEF"), "ghp_0123456789abcdefABCDEF"));
        assert!(secret_shapes(b"task-0123456789abcdef").is_empty(), "not a key prefix");
        assert!(secret_shapes(b"sk-short").is_empty());
    }

    #[test]
    fn long_high_entropy_tokens() {
        assert!(is_high_entropy_token(b"Zx9qL2mN8vR4tY6uW1eK3sD7"));
        assert!(has(
            &secret_env_values(b"UPSTREAM", b"Zx9qL2mN8vR4tY6uW1eK3sD7"),
            "Zx9qL2mN8vR4tY6uW1eK3sD7"
        ));
        for v in [
            "/usr/local/bin:/usr/bin:/bin",
            "/var/lib/dispatch/journal0123",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1",
            "en_US.UTF-8",
            "dispatch_server=debug,tower=info",
            "--admin-token=adm-tok-0123456789",
        ] {
            assert!(!is_high_entropy_token(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn command_line_flags() {
        let args: Vec<&[u8]> = vec![
            b"dispatch-server",
            b"--openai-api-key",
            b"sk-abcdef0123456789abcdef",
            b"--admin-token=tok-value-1",
            b"--password",
            b"hunter2",
            b"--api-token",
            b"--addr",
            b"127.0.0.1:0",
        ];
        let f = secret_args(&args);
        assert!(has(&f, "sk-abcdef0123456789abcdef"), "{f:?}");
        assert!(has(&f, "tok-value-1") && has(&f, "hunter2"), "{f:?}");
        assert!(!has(&f, "--addr") && !has(&f, "127.0.0.1:0"), "a flag is not a value: {f:?}");
    }

    #[test]
    fn environ_and_cmdline_blocks_are_masked_in_place_even_when_short() {
        let mut env = b"HOME=/root\0DB_PASS=abc\0DATABASE_URL=postgres://u:hunter2@db/x\0".to_vec();
        let s = scrub_environ_block(&mut env);
        assert_eq!(
            &env[..],
            &b"HOME=/root\0DB_PASS=***\0DATABASE_URL=*************************\0"[..]
        );
        assert!(has(&s, "hunter2"));
        let mut cmd = b"srv\0--password\0pw1\0--addr\0x\0--api-token=t1".to_vec();
        scrub_cmdline_block(&mut cmd);
        assert_eq!(&cmd[..], b"srv\0--password\0***\0--addr\0x\0--api-token=**");
    }

    #[test]
    fn a_dump_file_is_scrubbed_into_a_new_file_and_renamed() {
        let d = tempfile::tempdir().unwrap();
        let unscrubbed = d.path().join(format!("b-1.{DUMP_EXTENSION}{UNSCRUBBED_SUFFIX}"));
        fs::write(&unscrubbed, b"junk Bearer abcdefgh12345678 sk-abcdef0123456789abcdef end")
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let inode = fs::metadata(&unscrubbed).unwrap().ino();
        let (path, n) = scrub_file(&unscrubbed, &[]).unwrap();
        assert_eq!(path, d.path().join("b-1.dmp"));
        assert_eq!(n, 2);
        assert!(!unscrubbed.exists());
        assert_ne!(fs::metadata(&path).unwrap().ino(), inode, "a new file, not rewritten in place");
        let text = fs::read(&path).unwrap();
        assert!(!text.windows(8).any(|w| w == b"abcdefgh" || w == b"sk-abcde"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn leftovers_are_scrubbed_at_start() {
        let d = tempfile::tempdir().unwrap();
        let left = d.path().join(format!("b-2.{DUMP_EXTENSION}{UNSCRUBBED_SUFFIX}"));
        fs::write(&left, b"x postgres://u:hunter2@db/x y").unwrap();
        let tmp = d.path().join(format!("b-3.{DUMP_EXTENSION}{SCRUBBING_SUFFIX}"));
        fs::write(&tmp, b"half").unwrap();
        let done = scrub_leftovers(d.path(), &[]);
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(!left.exists() && !tmp.exists());
        assert_eq!(fs::read(d.path().join("b-2.dmp")).unwrap(), b"x postgres://u:*******@db/x y");
    }
}

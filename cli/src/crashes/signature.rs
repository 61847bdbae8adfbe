//! Crash signatures in the style of Mozilla Socorro's signature generator: a short string
//! that groups crashes with one cause, and stays the same when the binary is rebuilt.
//!
//! [`from_frames`] walks the crashing thread from the top (the innermost frame):
//!
//! 1. **Sentinels.** If a frame matches a sentinel (`core::panicking::panic*`,
//!    `std::panicking::begin_panic*`, `rust_begin_unwind`, `alloc::alloc::handle_alloc_error`),
//!    everything above it and the sentinel itself are dropped: what lies above is the panic or
//!    abort machinery, the caller below is what went wrong. An allocation failure
//!    (`handle_alloc_error`) starts the signature with `OOM`.
//! 2. **Irrelevant frames** are skipped: panic and abort plumbing, `compiler_builtins::`, libc
//!    internals (`__pthread_*`, `__libc_*`, `_dl_*`, ...), the crash handler's own frames.
//! 3. **Prefix frames** (`abort`, `raise`, `malloc`, `free`, `memcpy`,
//!    `core::ptr::drop_in_place`, the standard containers, `unwrap_failed`, ...) are appended
//!    and the walk goes on; the first frame that is not one is appended and ends it.
//! 4. The frames are joined with ` | `, at most 255 characters; at most the top 40 frames
//!    are looked at.
//!
//! What never enters a signature, so that the same crash in a rebuilt binary gives the same
//! string:
//!
//! - **Frames without a function name** (`module@0xoffset`): an offset moves with every
//!   build. They are skipped wherever they are; a stack with no named frame has no signature
//!   ([`from_frames`] returns `None`) and the caller falls back to the panic or the signal.
//! - **Frames found by stack scanning** (trust `scan`, `cfi_scan`): guesses, often a stale
//!   return address left on the stack.
//! - **Hashes**: the legacy mangling's `::h0123456789abcdef` suffix and the v0 mangling's
//!   crate disambiguators (`std[5f9c2d1e8a7b3c4d]::`).
//! - **Generic arguments**: `Vec<u8>`, `Vec<String>` and `Vec::<u8>` are all `Vec<T>`;
//!   a qualified path `<X as Trait>` keeps its shape, with X's and Trait's own arguments
//!   collapsed.
//! - **C++ parameter lists** (`f(int, char*)` is `f`), and glibc's aliases and CPU-specific
//!   variants (`__GI_raise` is `raise`, `__memmove_avx_unaligned_erms` is `memmove`), which
//!   differ between machines running the same binary.
//!
//! Inlined frames are frames like any other: the input lists them expanded, innermost first,
//! before the frame they were inlined into, and each carries its physical frame's trust.

use serde::Serialize;

/// How a frame was found by the stack walker (rust-minidump's `FrameTrust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// The crashing context's registers: the top frame.
    Context,
    /// Unwound with call frame information (`STACK CFI`, `.eh_frame`).
    Cfi,
    /// Unwound by following frame pointers.
    FramePointer,
    /// Supplied by the dump's writer.
    Prewalked,
    /// Found by scanning the stack for something that looks like a return address: a guess.
    Scan,
    /// Scanned, then checked against call frame information: still a guess.
    CfiScan,
    /// The walker did not say.
    None,
}

impl Trust {
    /// Whether the frame was found by stack scanning (never part of a signature).
    pub fn is_scanned(self) -> bool {
        matches!(self, Trust::Scan | Trust::CfiScan)
    }

    /// Parses rust-minidump's JSON spelling (`context`, `cfi`, `frame_pointer`, `prewalked`,
    /// `scan`, `cfi_scan`, `none`); anything else is [`Trust::None`].
    pub fn from_name(name: &str) -> Trust {
        match name {
            "context" => Trust::Context,
            "cfi" => Trust::Cfi,
            "frame_pointer" => Trust::FramePointer,
            "prewalked" => Trust::Prewalked,
            "scan" => Trust::Scan,
            "cfi_scan" => Trust::CfiScan,
            _ => Trust::None,
        }
    }
}

/// One frame of the crashing thread, innermost first, as the stack walker gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The function, demangled, as symbolicated; `None` when no symbol covers the address.
    pub function: Option<String>,
    /// The module's file name (`dispatch-server`, `libc.so.6`).
    pub module: Option<String>,
    /// Offset of the instruction in the module.
    pub module_offset: Option<u64>,
    /// How the frame was found (an inlined frame: its physical frame's).
    pub trust: Trust,
}

impl Frame {
    /// A named frame with the given trust (tests and callers that have no module).
    pub fn named(function: &str, trust: Trust) -> Frame {
        Frame { function: Some(function.to_owned()), module: None, module_offset: None, trust }
    }
}

/// The crashing thread's frames from a document in rust-minidump's JSON schema (what
/// `minidump-stackwalk --json` prints, and what post-mortem JSON follows where they overlap):
/// `crashing_thread.frames[]`, each frame's `inlines[]` (innermost first) expanded before it
/// with its trust. `None` when the document has no crashing thread.
pub fn frames_from_stackwalk_json(doc: &serde_json::Value) -> Option<Vec<Frame>> {
    let frames = doc.get("crashing_thread")?.get("frames")?.as_array()?;
    let hex = |v: Option<&serde_json::Value>| {
        let s = v?.as_str()?;
        u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
    };
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        let trust = Trust::from_name(f.get("trust").and_then(|t| t.as_str()).unwrap_or("none"));
        let module = f.get("module").and_then(|m| m.as_str()).map(str::to_owned);
        for inline in f.get("inlines").and_then(|i| i.as_array()).into_iter().flatten() {
            out.push(Frame {
                function: inline.get("function").and_then(|n| n.as_str()).map(str::to_owned),
                module: module.clone(),
                module_offset: None,
                trust,
            });
        }
        out.push(Frame {
            function: f.get("function").and_then(|n| n.as_str()).map(str::to_owned),
            module,
            module_offset: hex(f.get("module_offset")),
            trust,
        });
    }
    Some(out)
}

/// Frames looked at, from the top (Socorro's `MAXIMUM_FRAMES_TO_CONSIDER`).
pub const MAX_FRAMES: usize = 40;
/// Longest signature, characters; a longer one is cut and ends with `...`.
pub const MAX_CHARS: usize = 255;
/// Bumped when the rules change, so cached signatures are recomputed.
pub const RULES_VERSION: u32 = 1;

/// Frames that mark the start of what matters: the frames above them are the panic or
/// allocation-failure machinery. `*` at the end matches any rest of the name.
const SENTINELS: &[&str] = &[
    "core::panicking::panic*",
    "std::panicking::begin_panic*",
    // The exported name of `begin_panic_handler` in symbol files (`__rustc::rust_begin_unwind`
    // since Rust 1.88).
    "*rust_begin_unwind",
    "alloc::alloc::handle_alloc_error*",
];

/// Frames skipped wherever they are. `*` at the end matches any rest of the name, at the start
/// any beginning.
const IRRELEVANT: &[&str] = &[
    // Panic and abort plumbing.
    "core::panicking::*",
    "std::panicking::*",
    "std::panic::*",
    "panic_abort::*",
    "panic_unwind::*",
    "__rust_start_panic",
    "rust_panic",
    "*rust_begin_unwind",
    "__rustc::*",
    "*__rust_end_short_backtrace*",
    "std::sys::backtrace::*",
    "std::sys_common::backtrace::*",
    "std::process::abort",
    "std::sys::*abort_internal",
    "std::alloc::*",
    "alloc::alloc::*",
    "alloc::raw_vec::*",
    "__rust_alloc_error_handler",
    "__rg_oom",
    "core::ops::function::FnOnce::call_once*",
    "*as core::ops::function::FnOnce<T>>::call_once*",
    "core::ptr::write*",
    "core::ptr::read*",
    // DWARF names inlined frames without their path: `write_volatile<u64>`.
    "write_volatile*",
    "read_volatile*",
    "core::intrinsics::*",
    "core::hint::*",
    // The crash handler's own frames, when the dump was taken from inside the process.
    "crash_handler::*",
    "minidumper::*",
    "dispatch_telemetry::crash::*",
    // The compiler's runtime (memcpy, memset, __udivti3 and friends as Rust emits them).
    "compiler_builtins::*",
    // libc internals.
    "__GI_*",
    "__libc_*",
    "__pthread_*",
    "_dl_*",
    "_IO_*",
    "__restore_rt",
    "__kernel_*",
    "__futex*",
    "__lll_*",
    "__fortify_fail",
    "__chk_fail",
    "__stack_chk_fail",
    "__assert_fail*",
    "_sigtramp",
];

/// Frames that are appended and do not end the walk: the crash is in them, the cause is in
/// their caller. `*` as in [`IRRELEVANT`].
const PREFIX: &[&str] = &[
    "abort",
    "raise",
    "gsignal",
    "pthread_kill",
    "kill",
    "syscall",
    "malloc",
    "calloc",
    "realloc",
    "free",
    "cfree",
    "_int_free*",
    "_int_malloc",
    "_int_realloc",
    "malloc_printerr",
    "malloc_consolidate",
    "unlink_chunk*",
    "memcpy",
    "memmove",
    "memset",
    "memcmp",
    "bcmp",
    "memchr",
    "strlen",
    "strcmp",
    "strncmp",
    "strcpy",
    "strchr",
    "_rjem_*",
    "je_*",
    "tikv_jemallocator::*",
    "<tikv_jemallocator::*",
    "__rust_alloc",
    "__rust_dealloc",
    "__rust_realloc",
    "__rust_alloc_zeroed",
    "__rdl_*",
    "__rg_alloc",
    "__rg_dealloc",
    "__rg_realloc",
    "__rg_alloc_zeroed",
    "core::ptr::drop_in_place*",
    "core::result::unwrap_failed",
    "core::option::unwrap_failed",
    "core::option::expect_failed",
    "core::result::Result<T>::unwrap",
    "core::result::Result<T>::expect",
    "core::option::Option<T>::unwrap",
    "core::option::Option<T>::expect",
    "core::slice::index::*",
    "*as core::slice::index::SliceIndex<T>>::index*",
    "core::str::slice_error_fail*",
    "core::cell::panic_already*",
    "alloc::vec::*",
    "alloc::string::*",
    "alloc::sync::*",
    "alloc::rc::*",
    "alloc::boxed::*",
    "alloc::collections::*",
    "<alloc::*",
    "hashbrown::*",
];

/// Whether `name` matches `pattern`: exact, `prefix*`, `*suffix`-free `*contains*`.
fn matches(pattern: &str, name: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), _) if rest.ends_with('*') => name.contains(&rest[..rest.len() - 1]),
        (Some(rest), _) => name.ends_with(rest),
        (None, Some(prefix)) => name.starts_with(prefix),
        (None, None) => name == pattern,
    }
}

fn any_matches(list: &[&str], name: &str) -> bool {
    list.iter().any(|p| matches(p, name))
}

/// The signature of a crashing thread's frames (innermost first), or `None` when no named
/// frame found by unwinding (not scanning) is left once the rules ran: the dump could not be
/// symbolicated, and the caller should fall back to the panic or the signal.
pub fn from_frames(frames: &[Frame]) -> Option<String> {
    // Named, unwound frames only: offsets and guesses never reach the rules.
    let names: Vec<String> = frames
        .iter()
        .take(MAX_FRAMES)
        .filter(|f| !f.trust.is_scanned())
        .filter_map(|f| f.function.as_deref())
        .map(normalize)
        .filter(|n| !n.is_empty())
        .collect();
    let (start, oom) = match names.iter().position(|n| any_matches(SENTINELS, n)) {
        Some(i) => (i + 1, matches("alloc::alloc::handle_alloc_error*", &names[i])),
        None => (0, false),
    };
    let mut parts: Vec<&str> = Vec::new();
    for name in &names[start..] {
        if any_matches(IRRELEVANT, name) {
            continue;
        }
        parts.push(name);
        if !any_matches(PREFIX, name) {
            break;
        }
    }
    if parts.is_empty() {
        return None;
    }
    let mut sig = parts.join(" | ");
    if oom {
        sig = format!("OOM | {sig}");
    }
    Some(truncate(sig))
}

fn truncate(sig: String) -> String {
    if sig.chars().count() <= MAX_CHARS {
        return sig;
    }
    let cut: String = sig.chars().take(MAX_CHARS - 3).collect();
    format!("{cut}...")
}

/// A function name as it goes into a signature: hashes and disambiguators removed, generic
/// arguments collapsed to `<T>`, C++ parameter lists dropped, glibc aliases resolved.
pub fn normalize(function: &str) -> String {
    let mut name = function.trim().replace("`anonymous namespace'", "(anonymous namespace)");
    // Legacy mangling: `path::h0123456789abcdef`.
    if let Some(i) = name.rfind("::h") {
        let hash = &name[i + 3..];
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            name.truncate(i);
        }
    }
    let name = strip_disambiguators(&name);
    let name = collapse(&name);
    let name = name.trim().to_owned();
    glibc_alias(&name).unwrap_or(name)
}

/// Removes v0 crate disambiguators: `std[5f9c2d1e8a7b3c4d]::rt` is `std::rt`. A bracket of
/// at least 5 hex digits right after an identifier is one; `[u8]` and `[f64]` (slices, after
/// `<`, `&` or a space) are not.
fn strip_disambiguators(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let after_ident =
            rest[..open].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        let close = rest[open..].find(']').map(|c| open + c);
        match close {
            Some(close)
                if after_ident
                    && close - open > 5
                    && rest[open + 1..close].bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                out.push_str(&rest[..open]);
                rest = &rest[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Collapses generic argument lists to `<T>` (a turbofish `::<u8>` too), keeps the shape of
/// qualified paths (`<X as Trait>`, `<impl Trait for X>`) with their insides collapsed, and
/// drops C++-style parameter lists that follow a name.
fn collapse(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = out.chars().next_back();
        match c {
            '<' => {
                let Some(close) = matching(&chars, i, '<', '>') else {
                    out.extend(&chars[i..]);
                    break;
                };
                let inner: String = chars[i + 1..close].iter().collect();
                let opens_path = match prev {
                    None => true,
                    Some(p) => matches!(p, ' ' | '(' | ',' | '&' | '*' | '[' | '<'),
                } || (inner.starts_with("impl ")
                    && has_top_level(&inner, " for "))
                    || has_top_level(&inner, " as ");
                if opens_path {
                    out.push('<');
                    out.push_str(&collapse(&inner));
                    out.push('>');
                } else {
                    if out.ends_with("::") {
                        out.truncate(out.len() - 2); // turbofish: `f::<u8>` is `f<T>`
                    }
                    out.push_str("<T>");
                }
                i = close + 1;
            }
            '(' if prev.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '>') => {
                match matching(&chars, i, '(', ')') {
                    // A parameter list (or a call-like suffix): dropped.
                    Some(close) => i = close + 1,
                    None => {
                        out.extend(&chars[i..]);
                        break;
                    }
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Tidy what removing lists left: `f const` stays, double spaces go.
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `inner` (the inside of `<...>`) has `word` (` as `, ` for `) at its own top level.
fn has_top_level(inner: &str, word: &str) -> bool {
    let mut depth = 0i32;
    let bytes = inner.as_bytes();
    for (j, &b) in bytes.iter().enumerate() {
        match b {
            b'<' => depth += 1,
            b'>' if j == 0 || bytes[j - 1] != b'-' => depth -= 1,
            b' ' if depth == 0 && inner[j..].starts_with(word) => return true,
            _ => {}
        }
    }
    false
}

/// Index of the bracket closing the one at `open`; an arrow's `>` (`->`) does not count.
fn matching(chars: &[char], open: usize, o: char, c: char) -> Option<usize> {
    let mut depth = 0usize;
    for (j, &ch) in chars.iter().enumerate().skip(open) {
        if ch == o {
            depth += 1;
        } else if ch == c && !(c == '>' && j > 0 && chars[j - 1] == '-') {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
}

/// glibc's internal aliases and its CPU-specific string function variants, by their public
/// name: `__GI_raise` -> `raise`, `__GI___libc_free` -> `free`,
/// `__memmove_avx_unaligned_erms` -> `memmove`, `__strlen_evex` -> `strlen`.
fn glibc_alias(name: &str) -> Option<String> {
    const STRING_FUNCTIONS: &[&str] = &[
        "memcpy",
        "memmove",
        "memset",
        "memcmp",
        "memchr",
        "memrchr",
        "rawmemchr",
        "bcmp",
        "strlen",
        "strnlen",
        "strcmp",
        "strncmp",
        "strcpy",
        "stpcpy",
        "strchr",
        "strrchr",
        "strchrnul",
        "strcasecmp",
        "wmemset",
        "wcslen",
    ];
    const MALLOC_FUNCTIONS: &[&str] = &["malloc", "free", "calloc", "realloc", "memalign"];
    let mut n = name;
    if let Some(rest) = n.strip_prefix("__GI_") {
        n = rest;
        if let Some(rest) = n.strip_prefix("__libc_") {
            n = rest;
        } else if let Some(rest) = n.strip_prefix("__") {
            n = rest;
        }
    }
    if let Some(rest) = n.strip_prefix("__libc_") {
        if MALLOC_FUNCTIONS.contains(&rest) {
            return Some(rest.to_owned());
        }
    }
    if let Some(rest) = n.strip_prefix("__") {
        for f in STRING_FUNCTIONS {
            if rest.strip_prefix(f).is_some_and(|variant| variant.starts_with('_')) {
                return Some((*f).to_owned());
            }
        }
    }
    (n != name).then(|| n.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Frame {
        Frame::named(name, Trust::Cfi)
    }

    fn unnamed(module: &str, offset: u64, trust: Trust) -> Frame {
        Frame { function: None, module: Some(module.into()), module_offset: Some(offset), trust }
    }

    #[test]
    fn names_lose_hashes_generics_and_parameter_lists() {
        assert_eq!(
            normalize("dispatch_server::turn::run_step::h0123456789abcdef"),
            "dispatch_server::turn::run_step"
        );
        // Not a hash: too short, or not hex.
        assert_eq!(normalize("a::hello"), "a::hello");
        assert_eq!(normalize("a::h0123"), "a::h0123");
        assert_eq!(
            normalize("core::ptr::drop_in_place<alloc::vec::Vec<alloc::string::String>>"),
            "core::ptr::drop_in_place<T>"
        );
        assert_eq!(normalize("core::ptr::write_volatile::<u8>"), "core::ptr::write_volatile<T>");
        assert_eq!(
            normalize("<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop::h1111222233334444"),
            "<alloc::vec::Vec<T> as core::ops::drop::Drop>::drop"
        );
        assert_eq!(
            normalize(
                "core::ops::function::impls::<impl core::ops::function::FnOnce<A> for &F>::call_once"
            ),
            "core::ops::function::impls::<impl core::ops::function::FnOnce<T> for &F>::call_once"
        );
        assert_eq!(
            normalize("std[5f9c2d1e8a7b3c4d]::rt::lang_start::<()>::{closure#0}"),
            "std::rt::lang_start<T>::{closure#0}"
        );
        assert_eq!(normalize("<[u8] as core::fmt::Debug>::fmt"), "<[u8] as core::fmt::Debug>::fmt");
        assert_eq!(
            normalize("`anonymous namespace'::CrashFunction(int, char*)"),
            "(anonymous namespace)::CrashFunction"
        );
        assert_eq!(normalize("foo<int (*)(int)>::bar() const"), "foo<T>::bar const");
        assert_eq!(normalize("f<impl Fn() -> u8>"), "f<T>");
    }

    #[test]
    fn glibc_aliases_and_variants_are_their_public_names() {
        assert_eq!(normalize("__GI_raise"), "raise");
        assert_eq!(normalize("__GI_abort"), "abort");
        assert_eq!(normalize("__GI___libc_free"), "free");
        assert_eq!(normalize("__libc_malloc"), "malloc");
        assert_eq!(normalize("__memmove_avx_unaligned_erms"), "memmove");
        assert_eq!(normalize("__memcpy_evex_unaligned"), "memcpy");
        assert_eq!(normalize("__strlen_avx2"), "strlen");
        // Internals stay themselves (and are irrelevant).
        assert_eq!(normalize("__pthread_kill_implementation"), "__pthread_kill_implementation");
        assert_eq!(normalize("__libc_start_main"), "__libc_start_main");
    }

    /// A real Rust panic=abort stack on Linux, as minidump-stackwalk prints it for a release
    /// build with debuginfo: glibc's abort path, Rust's panic machinery, then the culprit.
    fn panic_stack(hash: &str, offset: u64) -> Vec<Frame> {
        let h = |name: &str| Frame::named(&format!("{name}::h{hash}"), Trust::Cfi);
        let mut frames = vec![
            Frame::named("__pthread_kill_implementation", Trust::Context),
            f("__pthread_kill_internal"),
            f("__GI___pthread_kill"),
            f("__GI_raise"),
            f("__GI_abort"),
            h("std::sys::pal::unix::abort_internal"),
            h("std::process::abort"),
            f("__rust_start_panic"),
            h("rust_panic"),
            h("std::panicking::rust_panic_with_hook"),
            h("std::panicking::begin_panic_handler::{{closure}}"),
            h("std::sys::backtrace::__rust_end_short_backtrace"),
            f("__rustc::rust_begin_unwind"),
            h("core::panicking::panic_fmt"),
            h("core::panicking::panic_bounds_check"),
            // Inlined into the next frame, listed first (innermost first).
            h("<usize as core::slice::index::SliceIndex<[T]>>::index"),
            h("dispatch_server::turn::pick_tool"),
            h("dispatch_server::turn::run_step"),
            h("dispatch_server::turn::run"),
        ];
        frames.insert(
            1,
            unnamed("dispatch-server", offset, Trust::Scan), // a stale return address
        );
        frames
    }

    #[test]
    fn a_panic_is_signed_by_its_caller_not_the_panic_machinery() {
        let sig = from_frames(&panic_stack("0123456789abcdef", 0x4242)).unwrap();
        assert_eq!(
            sig,
            "<usize as core::slice::index::SliceIndex<T>>::index | dispatch_server::turn::pick_tool"
        );
    }

    #[test]
    fn two_builds_of_one_crash_share_a_signature() {
        // Same source, rebuilt: other symbol hashes, other offsets, other scanned garbage.
        let a = panic_stack("0123456789abcdef", 0x4242);
        let mut b = panic_stack("fedcba9876543210", 0x9999);
        b.insert(2, unnamed("dispatch-server", 0x1_0000, Trust::CfiScan));
        for fr in &mut b {
            fr.module = Some("dispatch-server".into());
            fr.module_offset = fr.module_offset.map(|o| o + 0x30).or(Some(0x77));
        }
        let (sa, sb) = (from_frames(&a).unwrap(), from_frames(&b).unwrap());
        assert_eq!(sa, sb);
        assert!(!sa.contains("0x") && !sa.contains("::h"), "{sa}");
    }

    #[test]
    fn the_pipeline_fixture_stack_signs_the_faulting_function() {
        // The crashing thread of shared/fixtures/minidumps/dumps/pipeline-inlines-macos-segv.dmp
        // as `minidump-stackwalk --json --symbols-path .../symbols` prints it (inlines first).
        let frames = vec![
            Frame::named("core::ptr::write_volatile::<u8>", Trust::Context),
            Frame::named("sadness_generator::raise_segfault", Trust::Context),
            f("crash_client::real_main::{closure#1}"),
            f("crash_client::real_main"),
            f("crash_client::main"),
            f("<fn() as core::ops::function::FnOnce<()>>::call_once"),
            f("std::sys_common::backtrace::__rust_begin_short_backtrace::<fn(), ()>"),
            f("std::rt::lang_start::<()>::{closure#0}"),
            f("std::rt::lang_start_internal"),
            f("main"),
            unnamed("libdyld.dylib", 0x15f3c, Trust::Cfi),
            unnamed("libdyld.dylib", 0x15f3c, Trust::Scan),
        ];
        assert_eq!(from_frames(&frames).unwrap(), "sadness_generator::raise_segfault");
    }

    #[test]
    fn a_real_server_segfault_is_signed_by_the_faulting_function() {
        // The crashing thread of a release dispatch-server killed by `POST /admin/fault/segfault`
        // under its crash monitor, as `minidump-stackwalk --json --use-local-debuginfo` walked
        // it (its inlined frames carry DWARF's unqualified names).
        let frames = vec![
            Frame::named("write_volatile<u64>", Trust::Context),
            Frame::named("write_volatile<u64>", Trust::Context),
            Frame::named("dispatch_server::faults::inject_segfault", Trust::Context),
            f("dispatch_server::admin::fault::{{closure}}::{{closure}}"),
            f("std::sys::backtrace::__rust_begin_short_backtrace"),
            f("std::thread::lifecycle::spawn_unchecked::{{closure}}::{{closure}}"),
            f(
                "do_call<core::panic::unwind_safe::AssertUnwindSafe<std::thread::lifecycle::spawn_unchecked::{closure#1}::{closure_env#0}<dispatch_server::admin::fault::{async_fn#0}::{closure_env#8}, !>>, !>",
            ),
            f(
                "<core::panic::unwind_safe::AssertUnwindSafe<F> as core::ops::function::FnOnce<()>>::call_once",
            ),
            f("core::ops::function::FnOnce::call_once{{vtable.shim}}"),
            f("<std::sys::thread::unix::Thread>::new::thread_start"),
            f("set_alt_signal_stack_and_start"),
            Frame { module: Some("libc.so.6".into()), ..f("start_thread") },
            Frame { module: Some("libc.so.6".into()), ..f("_clone3") },
        ];
        assert_eq!(from_frames(&frames).unwrap(), "dispatch_server::faults::inject_segfault");
    }

    #[test]
    fn the_windows_fixture_stack_normalises_the_anonymous_namespace() {
        // shared/fixtures/minidumps/dumps/test.dmp with symbols/test_app.pdb.
        let frames = vec![
            Frame::named("`anonymous namespace'::CrashFunction", Trust::Context),
            f("main"),
            f("__tmainCRTStartup"),
            unnamed("kernel32.dll", 0x16fd6, Trust::Cfi),
        ];
        assert_eq!(from_frames(&frames).unwrap(), "(anonymous namespace)::CrashFunction");
    }

    #[test]
    fn unsymbolicated_and_scanned_frames_give_no_signature() {
        // shared/fixtures/minidumps/dumps/linux-mini.dmp: a context frame without symbols,
        // then scanned frames.
        let frames = vec![
            unnamed("crash", 0x1d72, Trust::Context),
            unnamed("libc-2.23.so", 0xf302d, Trust::Scan),
            Frame::named("looks_plausible", Trust::Scan),
        ];
        assert_eq!(from_frames(&frames), None);
        assert_eq!(from_frames(&[]), None);
    }

    #[test]
    fn an_unnamed_frame_is_skipped_even_at_the_top() {
        let frames = vec![
            unnamed("libfoo.so", 0x1234, Trust::Context),
            f("dispatch_server::tools::ssh::read_banner::h00000000000000aa"),
        ];
        assert_eq!(from_frames(&frames).unwrap(), "dispatch_server::tools::ssh::read_banner");
    }

    #[test]
    fn prefix_frames_accumulate_until_a_real_one() {
        // A double free caught by glibc: abort path, malloc internals, drop glue, the owner.
        let frames = vec![
            Frame::named("__pthread_kill_implementation", Trust::Context),
            f("__GI_raise"),
            f("__GI_abort"),
            f("__libc_message"),
            f("malloc_printerr"),
            f("_int_free"),
            f("__GI___libc_free"),
            f("core::ptr::drop_in_place<alloc::vec::Vec<u8>>::h1234123412341234"),
            f("dispatch_server::store::Store::close::h5678567856785678"),
            f("dispatch_server::main"),
        ];
        assert_eq!(
            from_frames(&frames).unwrap(),
            "raise | abort | malloc_printerr | _int_free | free | core::ptr::drop_in_place<T> | dispatch_server::store::Store::close"
        );
    }

    #[test]
    fn an_allocation_failure_is_an_oom_signature() {
        let frames = vec![
            Frame::named("__pthread_kill_implementation", Trust::Context),
            f("__GI_raise"),
            f("__GI_abort"),
            f("std::sys::pal::unix::abort_internal"),
            f("std::process::abort"),
            f("std::alloc::rust_oom"),
            f("__rg_oom"),
            f("__rust_alloc_error_handler"),
            f("alloc::alloc::handle_alloc_error::rt_error"),
            f("alloc::alloc::handle_alloc_error"),
            f("alloc::raw_vec::handle_error"),
            f("alloc::raw_vec::RawVec<T,A>::grow_one"),
            f("alloc::vec::Vec<T,A>::push"),
            f("dispatch_server::turn::collect_output"),
        ];
        assert_eq!(
            from_frames(&frames).unwrap(),
            "OOM | alloc::vec::Vec<T>::push | dispatch_server::turn::collect_output"
        );
    }

    #[test]
    fn unwrap_on_none_names_the_unwrap_and_the_caller() {
        let frames = vec![
            f("core::panicking::panic_fmt::h0000000000000001"),
            f("core::panicking::panic::h0000000000000002"),
            f("core::option::unwrap_failed::h0000000000000003"),
            f("dispatch_server::config::Config::resolve::h0000000000000004"),
        ];
        assert_eq!(
            from_frames(&frames).unwrap(),
            "core::option::unwrap_failed | dispatch_server::config::Config::resolve"
        );
    }

    #[test]
    fn compiler_builtins_and_handler_frames_are_skipped() {
        let frames = vec![
            f("compiler_builtins::mem::memcpy::h0000000000000001"),
            f("crash_handler::linux::state::signal_handler"),
            f("dispatch_server::faults::null_write"),
        ];
        assert_eq!(from_frames(&frames).unwrap(), "dispatch_server::faults::null_write");
    }

    #[test]
    fn only_the_first_forty_frames_count_and_long_signatures_are_cut() {
        let mut frames: Vec<Frame> = (0..40).map(|_| f("memcpy")).collect();
        frames.push(f("beyond_the_limit"));
        let sig = from_frames(&frames).unwrap();
        assert!(!sig.contains("beyond_the_limit"), "{sig}");
        assert_eq!(sig.chars().count(), MAX_CHARS);
        assert!(sig.ends_with("..."), "{sig}");
    }

    #[test]
    fn patterns_match_as_documented() {
        assert!(matches("abort", "abort"));
        assert!(!matches("abort", "abort2"));
        assert!(matches("core::panicking::*", "core::panicking::panic_fmt"));
        assert!(matches(
            "*__rust_end_short_backtrace*",
            "std::sys::backtrace::__rust_end_short_backtrace<T>"
        ));
        assert!(matches("*_x", "a_x"));
        assert!(!matches("*_x", "a_y"));
    }
}

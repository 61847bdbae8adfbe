//! The chained panic hook: a panic in a background thread, or inside a turn, is journaled
//! with its message, location, thread, backtrace and turn; the process carries on.

#![cfg(feature = "crash")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dispatch_journal::Record;
use dispatch_telemetry::crash::{TurnContext, install_panic_hook, set_current_turn};
use dispatch_telemetry::journal::JournalBuilder;

#[test]
fn background_and_turn_panics_are_journaled_and_the_process_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let journal = JournalBuilder::new(dir.path()).service("p").open().unwrap();
    // A hook installed before ours still runs (chained).
    let earlier = Arc::new(AtomicUsize::new(0));
    let e = earlier.clone();
    std::panic::set_hook(Box::new(move |_| {
        e.fetch_add(1, Ordering::SeqCst);
    }));
    install_panic_hook(journal.clone(), None);

    let r = std::thread::Builder::new()
        .name("background-worker".into())
        .spawn(|| panic!("background boom {}", 7))
        .unwrap()
        .join();
    assert!(r.is_err());
    let r = std::thread::Builder::new()
        .name("turn-worker".into())
        .spawn(|| {
            set_current_turn(Some(TurnContext {
                conversation: "conv-9".into(),
                turn: "turn-3".into(),
            }));
            let v: Vec<u8> = Vec::new();
            #[allow(clippy::indexing_slicing)]
            let x = v[1]; // index out of bounds: a real panic from the standard library
            x
        })
        .unwrap()
        .join();
    assert!(r.is_err());
    let _ = std::panic::take_hook();
    assert_eq!(earlier.load(Ordering::SeqCst), 2, "the previous hook ran for both panics");

    // The process is still here and the journal still takes records.
    assert!(journal.flush(Duration::from_secs(10)));
    let back = common::read_back(dir.path(), "p");
    let panics: Vec<_> = back
        .lines
        .iter()
        .filter_map(|l| match &l.record {
            Record::Panic(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(panics.len(), 2);
    let bg = panics.iter().find(|p| p.thread.as_deref() == Some("background-worker")).unwrap();
    assert_eq!(bg.message.as_deref(), Some("background boom 7"));
    assert!(bg.location.as_deref().unwrap().contains("panic_hook.rs:"));
    assert!(bg.backtrace.as_deref().is_some_and(|b| !b.is_empty()));
    assert_eq!(bg.fatal, Some(false));
    assert_eq!(bg.conversation, None);
    let turn = panics.iter().find(|p| p.thread.as_deref() == Some("turn-worker")).unwrap();
    assert!(turn.message.as_deref().unwrap().contains("index out of bounds"));
    assert_eq!(turn.conversation.as_deref(), Some("conv-9"));
    assert_eq!(turn.turn.as_deref(), Some("turn-3"));
    // The panic segment is kept until drained.
    assert!(dir.path().join(back.segments[0].keep_marker()).exists());
}

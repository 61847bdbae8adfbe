//! The chained panic hook: a `panic` record with backtrace and the turn it belongs to.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use std::sync::OnceLock;

use dispatch_journal::Record;
use dispatch_journal::record::{MemorySample, Panic};

use crate::journal::Journal;

/// The conversation and turn a thread is working for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnContext {
    /// Conversation id.
    pub conversation: Arc<str>,
    /// Turn id.
    pub turn: Arc<str>,
}

std::thread_local! {
    static CURRENT: RefCell<Option<TurnContext>> = const { RefCell::new(None) };
}

/// Sets the turn this thread works for (around each poll of a turn's future) and returns the
/// previous value, to restore afterwards. A panic meanwhile is journaled with it.
pub fn set_current_turn(ctx: Option<TurnContext>) -> Option<TurnContext> {
    CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), ctx))
}

/// The turn this thread works for.
pub fn current_turn() -> Option<TurnContext> {
    CURRENT.with(|c| c.borrow().clone())
}

/// What the host knows at the moment of a panic: the conversations active and its last
/// memory sample. Supplied by [`set_panic_context`].
#[derive(Debug, Clone, Default)]
pub struct PanicContext {
    /// Conversations with a turn running.
    pub active_conversations: Vec<String>,
    /// The sampler's last sample.
    pub memory: Option<MemorySample>,
}

static BACKTRACES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether `panic` records carry a backtrace (default: yes). Resolving the first backtrace
/// makes std load the binary's debug info, which stays resident (about 55 MB for the server in
/// release): a service that cannot afford that turns it off.
pub fn set_panic_backtraces(on: bool) {
    BACKTRACES.store(on, std::sync::atomic::Ordering::Relaxed);
}

type ContextFn = Box<dyn Fn() -> PanicContext + Send + Sync>;
static CONTEXT: OnceLock<ContextFn> = OnceLock::new();

/// Registers where the panic hook gets the active conversations and the last memory sample
/// for each `panic` record. Set once; later calls are ignored (returns false). The function
/// runs inside the panic hook: keep it cheap and never panic in it.
pub fn set_panic_context(f: impl Fn() -> PanicContext + Send + Sync + 'static) -> bool {
    CONTEXT.set(Box::new(f)).is_ok()
}

/// A panic payload as text: the `&str` or `String` it carries, or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// How long the hook waits for the `panic` record to be written and synced.
pub const PANIC_FLUSH_WAIT: Duration = Duration::from_millis(500);

type FatalHook = Box<dyn Fn() + Send + Sync>;

/// Installs a panic hook that writes a `panic` record (message, location, thread, backtrace,
/// conversation and turn) and waits (bounded) for it to reach the disk, then calls the hook
/// that was installed before. A panic on the thread named `main` is `fatal`: it ends the
/// process, and `on_fatal` runs (the server asks the crash monitor for a dump there).
pub fn install_panic_hook(journal: Journal, on_fatal: Option<FatalHook>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = panic_message(info.payload());
        let thread = std::thread::current();
        let thread_name = thread.name().unwrap_or("(unnamed)").to_string();
        let fatal = thread_name == "main";
        let ctx = current_turn();
        let host = CONTEXT.get().map(|f| f()).unwrap_or_default();
        let record = Record::Panic(Panic {
            message: Some(message),
            location: info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
            thread: Some(thread_name),
            backtrace: BACKTRACES
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| std::backtrace::Backtrace::force_capture().to_string()),
            conversation: ctx.as_ref().map(|c| c.conversation.to_string()),
            turn: ctx.as_ref().map(|c| c.turn.to_string()),
            fatal: Some(fatal),
            active_conversations: Some(host.active_conversations),
            memory: host.memory.map(Box::new),
        });
        journal.emit(record);
        journal.flush(PANIC_FLUSH_WAIT);
        if fatal && let Some(f) = &on_fatal {
            f();
        }
        previous(info);
    }));
}

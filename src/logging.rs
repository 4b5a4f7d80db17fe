//! Logs: one JSON (or text) line per event on stderr, written by a dedicated thread.
//!
//! Handlers never write to stderr themselves: events are formatted into a bounded channel
//! (`--log-buffer-lines`) that a `tracing-appender` worker thread drains into stderr. When
//! stderr is slow or not read at all (a full pipe), the channel fills and further lines are
//! dropped, never waited for; [`dropped_lines`] counts them
//! (`sidecar_sizer_log_lines_dropped_total`).

use crate::cli::LogFormat;
use std::sync::OnceLock;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Default capacity of the log channel, in lines (~0.5 KiB each).
pub const DEFAULT_BUFFER_LINES: usize = 8192;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Install the global subscriber writing through a lossy non-blocking stderr writer of
/// `buffer_lines` lines. Keep the guard alive until exit: dropping it flushes what is
/// buffered and stops the writer thread.
pub fn init(format: LogFormat, buffer_lines: usize) -> WorkerGuard {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(buffer_lines.max(1))
        .thread_name("sidecar-sizer-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIDECAR_SIZER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

/// Log lines dropped because the channel to the writer thread was full (0 when logging
/// was not set up by [`init`], e.g. in tests).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

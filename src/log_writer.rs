//! The binary's log output: a `log` thread writes the lines to stderr, so that no
//! server thread ever waits for stderr. (Part of the binary, not the library: a
//! library leaves logging to the program that embeds it.)
//!
//! Why: the dispatcher logs each connection and departure. Written directly, each line
//! is a `write` to stderr, and stderr can stall: a terminal being scrolled, `cargo run
//! 2>&1 | less` left paused, a full pipe to a log collector. The dispatcher would then
//! stop in the middle of a line and every user's chat would freeze with it. Here the
//! line goes into a bounded queue instead; if the `log` thread cannot keep up, lines
//! are dropped and counted, and the count is logged when stderr moves again. Losing
//! log lines is better than losing the chat.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Lines that may wait for stderr: about a megabyte of log at ~100 bytes a line.
const QUEUE: usize = 10_000;

/// How long [`LogFlusher::flush`] waits for the queued lines to reach stderr.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Message {
    /// One formatted log record.
    Line(Vec<u8>),
    /// Answer when every line before this one is written.
    Flush(Sender<()>),
}

/// The writer handed to `env_logger` (its `Target::Pipe`): it queues, never waits.
pub struct QueuedStderr {
    queue: Sender<Message>,
    dropped: Arc<AtomicU64>,
}

/// Lets `main` wait for the queued lines before the process ends (the last lines of a
/// shutdown would be lost otherwise).
pub struct LogFlusher {
    queue: Sender<Message>,
}

/// Starts the `log` thread. If it cannot be started, `None`: log to stderr directly.
pub fn start() -> Option<(QueuedStderr, LogFlusher)> {
    let (queue, lines) = crossbeam_channel::bounded(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&dropped);
    thread::Builder::new()
        .name("log".into())
        .spawn(move || write_lines(&lines, &counted))
        .ok()?;
    let flusher = LogFlusher {
        queue: queue.clone(),
    };
    Some((QueuedStderr { queue, dropped }, flusher))
}

impl Write for QueuedStderr {
    /// env_logger writes each record with one `write_all`, so a call is one whole line.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match self.queue.try_send(Message::Line(line.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The thread is gone (it cannot panic on a write error, but be safe):
            // write it ourselves rather than lose it.
            Err(TrySendError::Disconnected(_)) => io::stderr().write_all(line)?,
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // the `log` thread flushes; waiting here is what this file avoids
    }
}

impl LogFlusher {
    /// Waits (a bounded time: stderr may be stuck for good) until every line logged so
    /// far is written.
    pub fn flush(&self) {
        let (done, written) = crossbeam_channel::bounded(1);
        if self
            .queue
            .send_timeout(Message::Flush(done), FLUSH_WAIT)
            .is_ok()
        {
            let _ = written.recv_timeout(FLUSH_WAIT);
        }
    }
}

/// Says how many lines were dropped since the last report, if any. (The queue was full,
/// so they were the newest of their moment: they came after the line just written.)
fn report_dropped(dropped: &AtomicU64) {
    let lost = dropped.swap(0, Ordering::Relaxed);
    if lost > 0 {
        let note = format!("[log] {lost} later log lines dropped: stderr was too slow\n");
        let _ = io::stderr().lock().write_all(note.as_bytes());
    }
}

/// The `log` thread: writes each line; reports lines dropped while it was stuck.
fn write_lines(lines: &Receiver<Message>, dropped: &AtomicU64) {
    let stderr = io::stderr();
    for message in lines {
        match message {
            Message::Line(line) => {
                // A failing stderr (closed) cannot be reported anywhere: carry on.
                let _ = stderr.lock().write_all(&line);
                report_dropped(dropped);
            }
            Message::Flush(done) => {
                report_dropped(dropped);
                let _ = done.send(());
            }
        }
    }
}

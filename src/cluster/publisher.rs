//! The `cluster-pub` thread: publishes the room lines the dispatcher hands it. A line it
//! cannot publish goes back to the dispatcher ([`ClusterEvent::Unpublished`]), which then
//! delivers it locally, so no line a user said is lost to an outage.
//!
//! **At most once.** Each line is sent to Redis once, never retried: when a publish
//! fails, Redis may have run it anyway (it did, and the connection broke before its
//! answer came; or it answered too late), and a second try would publish it twice. A
//! connection that died while idle (Redis restarted since the last line: the first
//! write to a closed socket still succeeds, only the answer is missing) is found
//! *before* a line is sent on it: after `cluster-sub` subscribed again (Redis may have
//! restarted, however fast), or after [`IDLE_CHECK`] without use, it is checked with a
//! `PING` (harmless to repeat) and replaced if that fails. So the first line after an
//! outage is not needlessly kept local, and no line is ever sent twice.
//!
//! **The truth for `/stats`.** While publishing fails, lines stay on this node even
//! though the subscriber may still be linked: [`Stats::cluster_publish_failing`] says
//! so until a publish succeeds again. While it fails and no line comes, the thread
//! probes every back-off step with a `PUBLISH` to a channel nobody listens to, the
//! same kind of command as a line, so `/stats` recovers without waiting for a user to
//! speak.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::{Connection, RedisResult};

use super::history::{self, HistoryOp};
use super::retry::Backoff;
use super::{tell_dispatcher, ClusterEvent, Outgoing, CHANNEL, POLL};
use crate::event::Event;
use crate::stats::Stats;

/// How long connecting, or one PUBLISH, may take before the line is given back.
const TIMEOUT: Duration = Duration::from_secs(1);

/// A connection unused this long is checked (`PING`) before a line is sent on it.
pub(super) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Where the probe publishes while publishing fails: a channel no node subscribes to.
const PROBE_CHANNEL: &str = "underworld-line:probe";

struct Publisher<'a> {
    client: &'a redis::Client,
    connection: Option<Connection>,
    /// When the connection last carried a command that succeeded.
    last_used: Instant,
    backoff: Backoff,
    stats: &'a Stats,
    /// `cluster-sub`'s count of subscriptions, and its value when the connection was
    /// last known to be good.
    subscriptions: &'a AtomicU64,
    checked_at: u64,
}

pub(super) fn run(
    client: &redis::Client,
    lines: Receiver<Outgoing>,
    events: &Sender<Event>,
    stop: &AtomicBool,
    stats: &Stats,
    subscriptions: &AtomicU64,
) {
    let mut publisher = Publisher {
        client,
        connection: None,
        last_used: Instant::now(),
        backoff: Backoff::new(),
        stats,
        subscriptions,
        checked_at: 0,
    };
    loop {
        let line = match lines.recv_timeout(POLL) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                publisher.probe();
                continue;
            }
            // The dispatcher dropped its sender: the node is stopping.
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match publisher.publish_once(&line) {
            Ok(recalled) => {
                let Some(entries) = recalled else { continue };
                let event = ClusterEvent::Recalled {
                    seq: line.seq,
                    entries,
                };
                if !tell_dispatcher(events, stop, event) {
                    break;
                }
            }
            Err(()) => {
                if !tell_dispatcher(events, stop, ClusterEvent::Unpublished(line.seq)) {
                    break;
                }
            }
        }
    }
    log::debug!("cluster-pub stopped");
}

impl Publisher<'_> {
    /// Sends `line` once (see the module documentation); the history it read for a
    /// `JOIN`. `Err`: it was not published, or maybe it was: give it back.
    fn publish_once(&mut self, line: &Outgoing) -> Result<Option<Vec<String>>, ()> {
        let Some(connection) = self.usable_connection() else {
            self.set_failing(true);
            return Err(());
        };
        match publish(connection, line) {
            Ok(recalled) => {
                self.succeeded();
                Ok(recalled)
            }
            Err(e) => {
                // The subscriber logs outages once; this is the detail.
                log::debug!("cluster-pub: PUBLISH failed: {e}");
                self.failed();
                Err(())
            }
        }
    }

    /// A connection to send a line on: the one we have, checked first if it has been
    /// idle or Redis may have restarted; a new one if there is none and the back-off
    /// allows. `None`: none for now.
    fn usable_connection(&mut self) -> Option<&mut Connection> {
        let subscriptions = self.subscriptions.load(Ordering::SeqCst);
        let in_doubt = self.last_used.elapsed() >= IDLE_CHECK || subscriptions != self.checked_at;
        self.checked_at = subscriptions;
        if self.connection.is_some() && in_doubt {
            let alive = self
                .connection
                .as_mut()
                .is_some_and(|con| redis::cmd("PING").query::<String>(con).is_ok());
            if !alive {
                log::debug!("cluster-pub: the idle connection is gone; reconnecting");
                self.connection = None;
            }
        }
        if self.connection.is_none() && self.backoff.ready() {
            match connect(self.client) {
                Ok(fresh) => self.connection = Some(fresh),
                Err(e) => {
                    log::debug!("cluster-pub: cannot connect: {e}");
                    self.backoff.failed();
                }
            }
        }
        self.connection.as_mut()
    }

    /// While publishing fails and no line comes: tries a harmless publish at each
    /// back-off step, so that `/stats` says linked again once Redis takes them.
    fn probe(&mut self) {
        if !self.stats.cluster_publish_failing.load(Ordering::Relaxed) || !self.backoff.ready() {
            return;
        }
        let Some(connection) = self.usable_connection() else {
            return;
        };
        let probed = redis::cmd("PUBLISH")
            .arg(PROBE_CHANNEL)
            .arg("probe")
            .query::<i64>(connection);
        match probed {
            Ok(_) => self.succeeded(),
            Err(_) => self.failed(),
        }
    }

    fn succeeded(&mut self) {
        self.last_used = Instant::now();
        self.backoff.succeeded();
        self.set_failing(false);
    }

    /// A command failed: the connection is in doubt (a late answer would be taken for
    /// the next command's), so it is dropped; the next line or probe reconnects.
    fn failed(&mut self) {
        self.connection = None;
        self.backoff.failed();
        self.set_failing(true);
    }

    fn set_failing(&self, failing: bool) {
        let was = self
            .stats
            .cluster_publish_failing
            .swap(failing, Ordering::Relaxed);
        if was && !failing {
            log::info!("cluster-pub: publishing again");
        }
    }
}

fn connect(client: &redis::Client) -> RedisResult<Connection> {
    let connection = client.get_connection_with_timeout(TIMEOUT)?;
    connection.set_write_timeout(Some(TIMEOUT))?;
    connection.set_read_timeout(Some(TIMEOUT))?;
    Ok(connection)
}

/// Publishes the line, and does its history step in the same step (`MULTI`/`EXEC`, or
/// for a `JOIN` one script: see `history.rs`): returns the history read for a `JOIN`.
fn publish(connection: &mut Connection, line: &Outgoing) -> RedisResult<Option<Vec<String>>> {
    if let HistoryOp::Recall { room, keep } = &line.history {
        let entries = history::publish_and_recall(connection, CHANNEL, &line.payload, room, *keep)?;
        let entries = entries
            .into_iter()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect();
        return Ok(Some(entries));
    }
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(&line.payload)
        .ignore();
    match &line.history {
        HistoryOp::None => {
            pipe.query::<()>(connection)?;
            Ok(None)
        }
        HistoryOp::Remember { room, entry, keep } => {
            let key = history::key(room);
            pipe.cmd("LPUSH").arg(&key).arg(entry).ignore();
            pipe.cmd("LTRIM")
                .arg(&key)
                .arg(0)
                .arg((*keep).max(1) - 1)
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(&key)
                .arg(history::HISTORY_TTL.as_millis() as u64)
                .ignore();
            pipe.query::<()>(connection)?;
            Ok(None)
        }
        // Sent above, as one script.
        HistoryOp::Recall { .. } => Ok(None),
    }
}

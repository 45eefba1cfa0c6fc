//! The `cluster-pub` thread: publishes the room lines the dispatcher hands it. A line it
//! cannot publish goes back to the dispatcher ([`ClusterEvent::Unpublished`]), which then
//! delivers it locally, so no line a user said is lost to an outage.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use redis::{Connection, RedisResult};

use super::history::{self, HistoryOp};
use super::retry::Backoff;
use super::{tell_dispatcher, ClusterEvent, Outgoing, CHANNEL};
use crate::event::Event;

/// How long connecting, or one PUBLISH, may take before the line is given back.
const TIMEOUT: Duration = Duration::from_secs(1);

pub(super) fn run(
    client: &redis::Client,
    lines: Receiver<Outgoing>,
    events: &Sender<Event>,
    stop: &AtomicBool,
) {
    let mut connection: Option<Connection> = None;
    let mut backoff = Backoff::new();
    let mut failing = false;
    // Ends when the dispatcher drops its sender (the node is stopping).
    for line in lines {
        if connection.is_none() && backoff.ready() {
            match connect(client) {
                Ok(fresh) => connection = Some(fresh),
                Err(e) => {
                    log::debug!("cluster-pub: cannot connect: {e}");
                    backoff.failed();
                }
            }
        }
        // `None`: no connection, and the back-off says not to try yet.
        let had_connection = connection.is_some();
        match publish_or_retry(client, &mut connection, &line) {
            Some(Ok(recalled)) => {
                if failing {
                    log::info!("cluster-pub: publishing again");
                    failing = false;
                }
                backoff.succeeded();
                if let Some(entries) = recalled {
                    let event = ClusterEvent::Recalled {
                        seq: line.seq,
                        entries,
                    };
                    if !tell_dispatcher(events, stop, event) {
                        break;
                    }
                }
                continue;
            }
            Some(Err(e)) => {
                // The subscriber logs outages once; this is the detail.
                log::debug!("cluster-pub: PUBLISH failed: {e}");
                connection = None;
                backoff.failed();
            }
            None if had_connection => backoff.failed(), // lost, and no fresh one
            None => {}
        }
        failing = true;
        if !tell_dispatcher(events, stop, ClusterEvent::Unpublished(line.seq)) {
            break;
        }
    }
    log::debug!("cluster-pub stopped");
}

/// Publishes on the connection we have; if that connection turns out to be dead (Redis
/// restarted since the last line: the first write to a closed connection still
/// succeeds, only the reply is missing), tries once more on a fresh one, so the first
/// line after an outage is not needlessly kept local. Not after a timeout: Redis may
/// have taken the line, and a second try would publish it twice.
fn publish_or_retry(
    client: &redis::Client,
    connection: &mut Option<Connection>,
    line: &Outgoing,
) -> Option<RedisResult<Option<Vec<String>>>> {
    let first = publish(connection.as_mut()?, line);
    match first {
        Err(e) if !e.is_timeout() => {
            log::debug!("cluster-pub: connection lost ({e}); reconnecting once");
            *connection = connect(client).ok();
            Some(publish(connection.as_mut()?, line))
        }
        first => Some(first),
    }
}

fn connect(client: &redis::Client) -> RedisResult<Connection> {
    let connection = client.get_connection_with_timeout(TIMEOUT)?;
    connection.set_write_timeout(Some(TIMEOUT))?;
    connection.set_read_timeout(Some(TIMEOUT))?;
    Ok(connection)
}

/// Publishes the line, and does its history step in the same `MULTI`/`EXEC` (see
/// `history.rs`): returns the history read for a `JOIN`.
fn publish(connection: &mut Connection, line: &Outgoing) -> RedisResult<Option<Vec<String>>> {
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
        HistoryOp::Recall { room, keep } => {
            pipe.cmd("LRANGE")
                .arg(history::key(room))
                .arg(0)
                .arg((*keep).max(1) - 1);
            // Bytes, not `String`: one entry that is not UTF-8 must not fail the rest.
            let (entries,): (Vec<Vec<u8>>,) = pipe.query(connection)?;
            let entries = entries
                .into_iter()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .collect();
            Ok(Some(entries))
        }
    }
}

//! The `cluster-beat` thread: this node's heartbeat, and nothing else.
//!
//! Every [`BEAT`] it tells Redis that this node is alive for [`presence::ALIVE_TTL`]
//! more (`SET alive:<node> PX` and `SADD nodes`), on a connection of its own. Why a
//! thread of its own: the `cluster-reg` thread waits for the dispatcher when the
//! dispatcher's queue is full (it has answers to hand over), and a heartbeat that waits
//! behind it would let a live, merely busy node be declared lost. This thread talks to
//! Redis only; it never waits on the dispatcher.
//!
//! If a beat finds that the node was not registered (another node declared it lost, and
//! forgot it, while it was frozen or starved), it raises a flag: `cluster-reg` then
//! asks the dispatcher for every local user and registers them again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use redis::{Connection, RedisResult};

use super::presence;
use super::retry::Backoff;

/// How often the node beats.
pub const BEAT: Duration = Duration::from_secs(1);

/// How long connecting, or one beat, may take.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Beats until `stop` is disconnected (the `cluster-reg` thread drops its end before it
/// takes this node out of the register, and joins this thread first, so that no beat
/// can register the node again after it left). Raises `forgotten` when a beat finds
/// the node unregistered.
pub(super) fn run(client: &redis::Client, node: &str, stop: &Receiver<()>, forgotten: &AtomicBool) {
    let mut connection: Option<Connection> = None;
    let mut backoff = Backoff::new();
    // The first beat of the process registers the node: that is no news (`cluster-reg`
    // registers the users when it connects anyway).
    let mut first = true;
    loop {
        if connection.is_none() && backoff.ready() {
            match connect(client) {
                Ok(fresh) => connection = Some(fresh),
                Err(e) => {
                    log::debug!("cluster-beat: {e}");
                    backoff.failed();
                }
            }
        }
        if let Some(con) = connection.as_mut() {
            match presence::beat(con, node) {
                Ok(added) => {
                    backoff.succeeded();
                    if added && !first {
                        forgotten.store(true, Ordering::SeqCst);
                    }
                    first = false;
                }
                Err(e) => {
                    log::debug!("cluster-beat: {e}");
                    connection = None;
                    backoff.failed();
                }
            }
        }
        match stop.recv_timeout(BEAT) {
            Err(RecvTimeoutError::Timeout) => {}
            // Disconnected (or, never sent, a message): stop.
            _ => break,
        }
    }
    log::debug!("cluster-beat stopped");
}

fn connect(client: &redis::Client) -> RedisResult<Connection> {
    let connection = client.get_connection_with_timeout(TIMEOUT)?;
    connection.set_write_timeout(Some(TIMEOUT))?;
    connection.set_read_timeout(Some(TIMEOUT))?;
    Ok(connection)
}

//! The `cluster-sub` thread: subscribes to the cluster channel, parses what it hears
//! and hands each well-formed line to the dispatcher. Parsing here, not in the
//! dispatcher, keeps garbage off the thread that serves everyone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use redis::RedisError;

use super::retry::{Backoff, LogLimiter};
use super::wire::{self, Message};
use super::{tell_dispatcher, ClusterEvent, CHANNEL, POLL};
use crate::event::Event;

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Garbage on the channel is reported at most this often (with a count of the rest).
const GARBAGE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a subscription ended.
enum Ended {
    /// The node is stopping.
    Stopped,
    /// Redis could not be reached, or the connection broke.
    Lost(RedisError),
}

/// `subscriptions` counts the subscriptions made (raised before the dispatcher hears
/// `Up`): the publisher checks its own connection when it changes (`publisher.rs`).
pub(super) fn run(
    client: &redis::Client,
    events: &Sender<Event>,
    stop: &AtomicBool,
    broker: &str,
    subscriptions: &AtomicU64,
) {
    let mut backoff = Backoff::new();
    let mut garbage = LogLimiter::new(GARBAGE_LOG_EVERY);
    // Logged once per outage, not once per attempt: an outage can last hours.
    let mut outage_logged = false;
    while !stop.load(Ordering::SeqCst) {
        if !backoff.ready() {
            thread::sleep(backoff.remaining().min(POLL));
            continue;
        }
        let mut subscribed = false;
        let ended = listen(client, events, stop, &mut garbage, || {
            subscribed = true;
            subscriptions.fetch_add(1, Ordering::SeqCst);
            backoff.succeeded();
            outage_logged = false;
            log::info!("cluster: subscribed to {CHANNEL} on {broker}: rooms span nodes");
        });
        match ended {
            Ended::Stopped => break,
            Ended::Lost(e) => {
                if subscribed && !tell_dispatcher(events, stop, ClusterEvent::Down) {
                    break;
                }
                if !outage_logged {
                    log::warn!(
                        "cluster: no broker at {broker} ({e}): chat stays local to this node \
                         until it is back; retrying with back-off"
                    );
                    outage_logged = true;
                }
                backoff.failed();
            }
        }
    }
    log::debug!("cluster-sub stopped");
}

/// Connects, subscribes, tells the dispatcher (`on_subscribed` first), then hands it
/// every message until the connection breaks or the node stops.
fn listen(
    client: &redis::Client,
    events: &Sender<Event>,
    stop: &AtomicBool,
    garbage: &mut LogLimiter,
    on_subscribed: impl FnOnce(),
) -> Ended {
    let mut connection = match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
        Ok(connection) => connection,
        Err(e) => return Ended::Lost(e),
    };
    // A read timeout, so the thread looks at the stop flag every POLL while the channel
    // is quiet (a blocking read could not be interrupted otherwise).
    if let Err(e) = connection.set_read_timeout(Some(POLL)) {
        return Ended::Lost(e);
    }
    let mut pubsub = connection.as_pubsub();
    if let Err(e) = pubsub.subscribe(CHANNEL) {
        return Ended::Lost(e);
    }
    // Only now: a line the dispatcher publishes after `Up` is sure to come back to us.
    on_subscribed();
    if !tell_dispatcher(events, stop, ClusterEvent::Up) {
        return Ended::Stopped;
    }
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ended::Stopped;
        }
        let message = match pubsub.get_message() {
            Ok(message) => message,
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Ended::Lost(e),
        };
        let heard = match wire::parse_any(message.get_payload_bytes()) {
            Ok(Message::Room(record)) => Ok(ClusterEvent::Heard(Box::new(record))),
            Ok(Message::Direct(direct)) => Ok(ClusterEvent::Direct(Box::new(direct))),
            Err(why) => Err(why),
        };
        match heard {
            Ok(event) => {
                if !tell_dispatcher(events, stop, event) {
                    return Ended::Stopped;
                }
            }
            Err(why) => {
                if let Some(held_back) = garbage.allow() {
                    log::warn!(
                        "cluster: dropped a message on {CHANNEL}: {why} \
                         ({held_back} more dropped since the last report)"
                    );
                }
            }
        }
    }
}

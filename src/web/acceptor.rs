//! The `web-acceptor` thread: accepts each connection to the web listener, applies the
//! same caps as the TCP listener (`--max-clients`, `--max-per-ip`), and gives the
//! connection its own `web-N` thread, which reads requests (and, after an upgrade,
//! WebSocket messages) until the connection ends.
//!
//! Unlike the TCP acceptor, it starts threads itself: an HTTP client that is refused or
//! kept waiting retries, and the first thing a web connection needs is a reader anyway
//! (the client speaks first). A refused connection gets an HTTP answer: `503` when the
//! listener is full, `429` when its address has too many connections.

use std::collections::HashMap;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::http::{write_response, Response};
use super::joiner::Joiner;
use super::routes::serve_connection;
use super::Context;
use crate::acceptor::{discard_input, source_key};
use crate::limits::Slots;
use crate::transport::{TcpConnection, Transport};

/// An address's open HTTP connections are capped at `--max-per-ip`, but never below
/// this: a browser opens up to 6 connections to a host (the page, the script's
/// requests, the WebSocket), and a connection still counts for the moment between the
/// client reading its answer and its thread seeing the end, so a client making
/// requests one after another would otherwise be refused at random under a cap of 1.
const OPEN_REQUESTS_AT_LEAST: usize = 8;

/// A connection being served.
struct Live {
    /// Weak: the socket must close when its thread (or, for a WebSocket, the
    /// dispatcher) lets go of it, not when the acceptor next looks.
    connection: Weak<TcpConnection>,
    /// Set by the connection thread once it is a WebSocket: from then on the
    /// dispatcher owns its end (a `BYE` and a close frame), not the acceptor.
    upgraded: Arc<AtomicBool>,
}

/// Live connections per source address: counted up by the acceptor, and down by each
/// connection thread as it ends, not when the acceptor next hears of it: a browser
/// opens a new connection right after closing one, and must not find its old one
/// still counted against `--max-per-ip`.
pub(crate) type PerSource = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The connections being served, and how many come from each source.
#[derive(Default)]
struct Served {
    live: HashMap<u64, Live>,
}

impl Served {
    /// Forgets the connections whose threads the joiner has joined (it freed their
    /// slots under the cap at once, and each thread uncounted its source as it ended).
    fn release(&mut self, released: &Receiver<u64>) {
        for number in released.try_iter() {
            self.live.remove(&number);
        }
    }
}

/// Runs the accept loop until `stopping` is set (and the listener woken).
pub(super) fn run(
    listener: TcpListener,
    context: &Arc<Context>,
    stopping: &AtomicBool,
    slots: &Arc<Slots>,
) {
    let (ended_tx, ended) = crossbeam_channel::unbounded::<u64>();
    let (released_tx, released) = crossbeam_channel::unbounded::<u64>();
    let joiner = match Joiner::start(ended, Arc::clone(slots), released_tx) {
        Ok(joiner) => joiner,
        Err(e) => {
            log::error!("web: could not start the joiner thread: {e}");
            return;
        }
    };
    let mut served = Served::default();
    let mut next_number = 1u64;
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            // Usually `WebListener::stop`'s own wake-up connection: not logged as a
            // refusal.
            if let Ok((stream, _)) = accepted {
                answer_and_close(&stream, &Response::error(503, "the server is stopping"));
            }
            break;
        }
        served.release(&released);
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("web: accept failed: {e}");
                // Out of file descriptors would fail again at once: pause, not spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let source = source_key(peer.ip());
        let from_source = context
            .open_requests
            .lock()
            .get(&source)
            .copied()
            .unwrap_or(0);
        let max_per_ip = context.config.max_per_ip;
        if max_per_ip > 0 && from_source >= max_per_ip.max(OPEN_REQUESTS_AT_LEAST) {
            let why = "too many connections from your address";
            refuse(&stream, Response::error(429, why));
            continue;
        }
        // One cap for both listeners: together they must stay below the thread limit.
        if !slots.take() {
            refuse(&stream, Response::error(503, "server full"));
            continue;
        }
        let number = next_number;
        next_number += 1;
        let connection = Arc::new(TcpConnection::new(stream));
        // Counted before the thread exists: it uncounts itself when it ends (through
        // `Finished`, which also runs if the thread cannot be created).
        *context.open_requests.lock().entry(source).or_default() += 1;
        let upgraded = Arc::new(AtomicBool::new(false));
        let finished = Finished {
            number,
            to: ended_tx.clone(),
            source,
            per_source: Arc::clone(&context.open_requests),
            upgraded: Arc::clone(&upgraded),
        };
        let spawned = {
            let (connection, upgraded, context) = (
                Arc::clone(&connection),
                Arc::clone(&upgraded),
                Arc::clone(context),
            );
            thread::Builder::new()
                .name(format!("web-{number}"))
                .stack_size(context.config.thread_stack)
                .spawn(move || {
                    let _finished = finished;
                    serve_connection(&connection, source, &upgraded, &context);
                    if !upgraded.load(Ordering::SeqCst) {
                        // Plain HTTP: done with this socket. (A WebSocket's end is the
                        // dispatcher's: it may still be writing the `BYE`.)
                        connection.close();
                    }
                })
        };
        match spawned {
            Ok(thread) => {
                let live = Live {
                    connection: Arc::downgrade(&connection),
                    upgraded,
                };
                served.live.insert(number, live);
                joiner.watch(number, thread);
            }
            Err(e) => {
                slots.give_back();
                log::error!("web: could not start a thread: {e}");
                refuse(connection.stream(), Response::error(503, "server full"));
            }
        }
    }
    // Wake the threads still reading plain HTTP requests (a kept-alive connection
    // waits up to the request timeout); WebSocket users and long polls end as the
    // dispatcher says `BYE` to them. Then join them all.
    for live in served.live.values() {
        if !live.upgraded.load(Ordering::SeqCst) {
            if let Some(connection) = live.connection.upgrade() {
                connection.close();
            }
        }
    }
    joiner.finish();
    log::debug!("web acceptor stopped");
}

/// Answers a connection we will not serve, and closes it.
fn refuse(stream: &TcpStream, response: Response) {
    log::info!("web: refused a connection ({})", response.status);
    answer_and_close(stream, &response);
}

/// Writes one response to a brand-new connection (its buffer is empty, so this short
/// write does not wait), then closes it without a reset.
fn answer_and_close(stream: &TcpStream, response: &Response) {
    let _ = write_response(stream, response, false, false, Duration::from_millis(100));
    let _ = stream.shutdown(std::net::Shutdown::Write);
    discard_input(stream);
}

/// When dropped (even by a panic): uncounts the connection's source (unless it became
/// a WebSocket, which was uncounted then: see `routes.rs`), and tells the joiner that
/// its thread is done.
struct Finished {
    number: u64,
    to: Sender<u64>,
    source: IpAddr,
    per_source: PerSource,
    upgraded: Arc<AtomicBool>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        if !self.upgraded.load(Ordering::SeqCst) {
            uncount(&self.per_source, self.source);
        }
        let _ = self.to.send(self.number);
    }
}

/// One open connection fewer from `source`.
pub(crate) fn uncount(per_source: &PerSource, source: IpAddr) {
    let mut per_source = per_source.lock();
    if let Some(count) = per_source.get_mut(&source) {
        *count -= 1;
        if *count == 0 {
            per_source.remove(&source);
        }
    }
}

//! The acceptor thread: takes each new TCP connection, applies the connection caps, and
//! gives the connection its own named thread (`conn-42`).
//!
//! It also keeps every connection thread's `JoinHandle`, so that at shutdown it can
//! join them all, and reaps the handles of finished threads as it goes: an exited but
//! unjoined thread still holds its stack mappings, which count against the very limit
//! that caps connections.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::config::Config;
use crate::connection::run_connection;
use crate::event::{ClientId, Event};
use crate::reply::Reply;
use crate::stats::Stats;

/// The smallest write timeout the OS takes (std turns it into 1 µs, the kernel rounds
/// it up to one scheduler tick). It is what keeps a write to a full socket from blocking
/// the dispatcher for more than a few milliseconds; see `transport.rs`.
const WRITE_TIMEOUT: Duration = Duration::from_nanos(1);

/// Everything the acceptor thread needs.
pub(crate) struct Acceptor {
    pub(crate) listener: TcpListener,
    pub(crate) events: Sender<Event>,
    pub(crate) config: Arc<Config>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) max_clients: usize,
    /// Set by `Server::shutdown`, which then connects to the listener to wake `accept`.
    pub(crate) stopping: Arc<AtomicBool>,
}

/// A running connection thread, as the acceptor tracks it.
struct Running {
    thread: JoinHandle<()>,
    /// What `--max-per-ip` counted it under (see [`source_key`]).
    source: IpAddr,
}

impl Acceptor {
    pub(crate) fn run(self) {
        let mut running: HashMap<ClientId, Running> = HashMap::new();
        let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
        // Each connection thread's last act is to send its id here.
        let (finished_tx, finished_rx) = crossbeam_channel::unbounded::<ClientId>();
        let mut next_id = 1u64;

        for stream in self.listener.incoming() {
            if self.stopping.load(Ordering::SeqCst) {
                // The connection that woke us may be a real client: tell it why.
                if let Ok(stream) = stream {
                    self.refuse(&stream, "server shutting down");
                }
                break;
            }
            // Reaping happens here, on each accept, because this thread blocks in
            // `accept` and has no other moment. Threads that end in between keep their
            // stack mappings (and their per-IP count) until the next connection arrives,
            // which is exactly when the cap below needs them back.
            reap(&finished_rx, &mut running, &mut per_ip);
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    // Out of file descriptors (EMFILE) would fail again at once:
                    // pause instead of spinning.
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let Ok(peer) = stream.peer_addr() else {
                continue; // already gone
            };
            if running.len() >= self.max_clients {
                self.refuse(&stream, "server full");
                continue;
            }
            let source = source_key(peer.ip());
            let from_ip = per_ip.get(&source).copied().unwrap_or(0);
            if self.config.max_per_ip > 0 && from_ip >= self.config.max_per_ip {
                self.refuse(&stream, "too many connections from your address");
                continue;
            }
            let id = ClientId(next_id);
            next_id += 1;
            if let Err(e) = configure(&stream) {
                log::warn!("could not configure {id}'s socket: {e}");
                continue;
            }
            let stream = Arc::new(stream);
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            match self.spawn(id, Arc::clone(&stream), finished_tx.clone(), ready_tx) {
                Ok(thread) => {
                    // Wait until the thread has queued its `Connected` (see
                    // `run_connection`). It also paces accepting to what the dispatcher
                    // can take in: a full event queue slows new arrivals, not old ones.
                    let _ = ready_rx.recv();
                    Stats::add(&self.stats.accepted, 1);
                    *per_ip.entry(source).or_default() += 1;
                    running.insert(id, Running { thread, source });
                    log::debug!("{id} from {peer}");
                }
                Err(e) => {
                    // Should not happen below the derived cap; handled all the same,
                    // and the client is told, like any other refusal.
                    log::error!("could not start a thread for {id}: {e}");
                    self.refuse(&stream, "server full");
                }
            }
        }

        // Stop accepting (the listener closes when `self` is dropped below), tell the
        // dispatcher no more clients will come, then wait for every connection thread:
        // the dispatcher is closing their sockets, which ends them.
        let _ = self.events.send(Event::AcceptorStopped);
        drop(self);
        for (_, conn) in running.drain() {
            let _ = conn.thread.join();
        }
        log::debug!("acceptor stopped");
    }

    fn spawn(
        &self,
        id: ClientId,
        stream: Arc<TcpStream>,
        finished: Sender<ClientId>,
        ready: Sender<()>,
    ) -> io::Result<JoinHandle<()>> {
        let events = self.events.clone();
        let config = Arc::clone(&self.config);
        thread::Builder::new()
            .name(format!("conn-{}", id.0))
            .stack_size(self.config.thread_stack)
            .spawn(move || {
                // Dropped last, even if the thread panics: the acceptor then joins it
                // and frees its slot.
                let _finished = Finished { id, to: finished };
                run_connection(id, stream, events, config, ready);
            })
    }

    /// Tells a client why it cannot come in, and closes. The socket is brand new, so
    /// its buffer is empty and this short write cannot block.
    fn refuse(&self, stream: &TcpStream, reason: &str) {
        Stats::add(&self.stats.refused, 1);
        log::info!("refused a connection: {reason}");
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let mut stream = stream;
        let _ = stream.write_all(Reply::Bye { reason }.to_line().as_bytes());
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

/// What `--max-per-ip` counts as one source. An IPv4 address is one source (an
/// IPv4-mapped IPv6 address, `::ffff:a.b.c.d`, is the same IPv4 address). An IPv6 host
/// usually owns a whole /64 and can pick any address in it, so for IPv6 the /64 prefix
/// is the source; otherwise one machine could open unlimited connections.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Socket options every client connection gets.
fn configure(stream: &TcpStream) -> io::Result<()> {
    // Chat lines are small and interactive: send them at once rather than waiting to
    // fill a packet (Nagle). Our own batching already coalesces under load.
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))
}

/// Tells the acceptor, when dropped, that a connection thread is done.
struct Finished {
    id: ClientId,
    to: Sender<ClientId>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.to.send(self.id);
    }
}

/// Joins the threads that have announced they are done, and forgets their addresses.
fn reap(
    finished: &Receiver<ClientId>,
    running: &mut HashMap<ClientId, Running>,
    per_ip: &mut HashMap<IpAddr, usize>,
) {
    for id in finished.try_iter() {
        if let Some(conn) = running.remove(&id) {
            let _ = conn.thread.join();
            if let Some(count) = per_ip.get_mut(&conn.source) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&conn.source);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_prefixes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source_key(ip("127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(source_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            source_key(ip("2001:db8:1:2::7"))
        );
        assert_ne!(
            source_key(ip("2001:db8:1:3::1")),
            source_key(ip("2001:db8:1:2::1"))
        );
    }
}

//! The acceptor thread: takes each new TCP connection, applies the connection caps, has
//! the dispatcher greet it at once, and hands it to the [spawner](crate::spawner), which
//! gives it its own named thread (`conn-42`).
//!
//! # Why accepting never waits for a thread
//!
//! `TcpListener::bind` listens with a backlog of 128. When that queue is full, Linux
//! answers new clients with SYN cookies and drops their final ACK: the client believes
//! it is connected, the server knows nothing of it, and since this protocol is
//! server-speaks-first, a person in `nc` then sits in front of a silent terminal for
//! good. So the accept loop must drain the queue faster than any burst fills it.
//!
//! Creating and starting a thread is the slow part of a new connection (tens of
//! microseconds, more when thousands start at once on two cores). The accept loop does
//! only the cheap part, a few system calls per client:
//!
//! 1. `accept`, the caps (`--max-clients`, `--max-per-ip`), two socket options;
//! 2. `Event::Connected` to the dispatcher, which writes `HELLO` right away: the
//!    dispatcher writes sockets anyway, and needs no reader thread for that;
//! 3. the socket to the spawner thread, which creates the reader thread once the
//!    acceptor has had a quiet moment (so that thread creation never competes with
//!    draining the listen queue; see `spawner.rs`).
//!
//! Two more things keep `accept` itself from stalling: the file-descriptor table is
//! grown to full size before the server starts (`fdtable.rs`), and the send-queue
//! watchdog does not scan the kernel's socket table because of a storm's `HELLO`s
//! (`sendq.rs`).
//!
//! And two threads run this loop on the one listener (see `Acceptor::run`): when one
//! is preempted, the other keeps draining the queue.
//!
//! Any line the client sends before its reader exists waits in the kernel's receive
//! buffer, so nothing is lost; and since the acceptor queues `Connected` before the
//! reader can exist, the dispatcher always hears of a client before its first line.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::config::Config;
use crate::event::{ClientId, Event, IdSource};
use crate::limits::{Slots, Sources};
use crate::reply::Reply;
use crate::sendq::{self, Peers, Watchdog};
use crate::spawner::{NewConnection, Spawner};
use crate::stats::Stats;
use crate::transport::{TcpConnection, SMALLEST_WRITE_TIMEOUT};

/// Everything the acceptor thread needs.
pub(crate) struct Acceptor {
    pub(crate) listener: TcpListener,
    pub(crate) events: Sender<Event>,
    pub(crate) config: Arc<Config>,
    pub(crate) stats: Arc<Stats>,
    /// The connection cap, shared with the web listener (feature `web`).
    pub(crate) slots: Arc<Slots>,
    /// `--max-per-ip`: users per address, shared with the web listener.
    pub(crate) users: Arc<Sources>,
    /// Set by `Server::shutdown`, which then connects to the listener to wake `accept`.
    pub(crate) stopping: Arc<AtomicBool>,
    /// Shared with the web listener (feature `web`), so ids never collide.
    pub(crate) ids: Arc<IdSource>,
}

/// The connections admitted and not yet ended, by peer address for the send-queue
/// watchdog. (The caps are counted in `limits::Slots` and `limits::Sources`, shared
/// with the web listener, and given back by the spawner as it joins each thread.)
#[derive(Default)]
struct Admitted {
    /// Each live connection's peer address.
    live: HashMap<ClientId, SocketAddr>,
    /// Peer address → connection, shared with the send-queue watchdog.
    peers: Peers,
}

impl Admitted {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.len()
    }

    fn admit(&mut self, id: ClientId, peer: SocketAddr) {
        let peer = sendq::peer_key(peer);
        self.live.insert(id, peer);
        self.peers.lock().insert(peer, id);
    }

    /// Forgets the connections whose thread has ended (or never started).
    fn release(&mut self, ended: &Receiver<ClientId>) {
        for id in ended.try_iter() {
            let Some(peer) = self.live.remove(&id) else {
                continue;
            };
            // Only if it is still this connection's: the same address may already
            // belong to a newer one (a client that reconnected from the same port).
            let mut peers = self.peers.lock();
            if peers.get(&peer) == Some(&id) {
                peers.remove(&peer);
            }
        }
    }
}

impl Acceptor {
    /// Starts the acceptor thread, with the threads it owns: the spawner and the
    /// send-queue watchdog. They are started here, before `Server::bind` returns, so a
    /// running server has all its threads from the start.
    pub(crate) fn start(self) -> io::Result<JoinHandle<()>> {
        let (ended_tx, ended) = crossbeam_channel::unbounded::<ClientId>();
        let spawner = Spawner::start(
            Arc::clone(&self.config),
            self.events.clone(),
            Arc::clone(&self.stats),
            Arc::clone(&self.slots),
            Arc::clone(&self.users),
            ended_tx,
        )?;
        let admitted = Admitted::default();
        let watchdog = self.start_watchdog(&admitted.peers);
        // The acceptor starts its partner itself (they share borrowed state, see
        // `run`); wait for that, so that `Server::bind` returns with every thread running.
        let (started, partner_started) = crossbeam_channel::bounded(1);
        let acceptor = thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || self.run(spawner, watchdog, admitted, &ended, &started))?;
        let _ = partner_started.recv();
        Ok(acceptor)
    }

    /// Two threads accept on the one listener: the kernel hands each new connection to
    /// one of those waiting in `accept`. While one is off the processor (its core is
    /// shared with the dispatcher writing `HELLO`s, the spawner, the load itself), the
    /// other keeps draining the listen queue.
    fn run(
        self,
        spawner: Spawner,
        watchdog: Option<Watchdog>,
        admitted: Admitted,
        ended: &Receiver<ClientId>,
        started: &Sender<()>,
    ) {
        let admitted = Mutex::new(admitted);
        // How many of the two accepting threads have seen the stop.
        let stopped = AtomicUsize::new(0);
        thread::scope(|scope| {
            let partner = thread::Builder::new()
                .name("acceptor-2".into())
                .spawn_scoped(scope, || {
                    self.accept_until_stopped(&spawner, &admitted, ended, &stopped)
                });
            if let Err(e) = &partner {
                log::warn!("could not start the second accepting thread: {e}");
                stopped.fetch_add(1, Ordering::SeqCst); // nobody to wake at the stop
            }
            let _ = started.send(());
            self.accept_until_stopped(&spawner, &admitted, ended, &stopped);
        });
        self.turn_away_the_queue();

        // No more `Connected` will follow: the dispatcher may finish its shutdown once
        // its clients are gone. Then the spawner joins every connection thread, which
        // end as the dispatcher closes their sockets.
        let _ = self.events.send(Event::AcceptorStopped);
        drop(self);
        if let Some(watchdog) = watchdog {
            watchdog.finish();
        }
        spawner.finish();
        log::debug!("acceptor stopped");
    }

    /// One accepting thread's loop, until the server stops. The first of the two
    /// threads to see the stop wakes the other (a blocking `accept` ends only with a
    /// connection); a wake-up connection the other did not take waits in the queue,
    /// which is answered once both have stopped.
    fn accept_until_stopped(
        &self,
        spawner: &Spawner,
        admitted: &Mutex<Admitted>,
        ended: &Receiver<ClientId>,
        stopped: &AtomicUsize,
    ) {
        loop {
            let accepted = self.listener.accept();
            spawner.arrived();
            if self.stopping.load(Ordering::SeqCst) {
                if let Ok((stream, _)) = accepted {
                    self.turn_away(&stream);
                }
                if stopped.fetch_add(1, Ordering::SeqCst) == 0 {
                    if let Ok(addr) = self.listener.local_addr() {
                        // Briefly: if the listen queue is full, this connection may be
                        // dropped, but then the queued clients wake the other anyway.
                        wake_accept_within(addr, Duration::from_millis(50));
                    }
                }
                return;
            }
            // The watchdog's map is updated here, on each accept, because this thread
            // blocks in `accept` and has no other moment. (The caps' counts are given
            // back by the spawner, as it joins each thread.)
            admitted.lock().release(ended);
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    // Out of file descriptors (EMFILE) would fail again at once:
                    // pause instead of spinning.
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let source = source_key(peer.ip());
            if !self.users.take(source) {
                self.refuse(&stream, "too many connections from your address");
                continue;
            }
            if !self.slots.take() {
                self.users.give_back(source);
                self.refuse(&stream, "server full");
                continue;
            }
            let id = self.ids.next();
            let connection = Arc::new(TcpConnection::new(stream));
            let new = NewConnection {
                id,
                source,
                connection,
            };
            if !self.greet_and_hand_off(new, peer, admitted, spawner) {
                self.slots.give_back();
                self.users.give_back(source);
            }
        }
    }

    /// The send-queue watchdog for this listener's connections (see `sendq.rs`);
    /// without it the server still runs, with only its own buffer limits.
    fn start_watchdog(&self, peers: &Peers) -> Option<Watchdog> {
        let listener = self.listener.local_addr().ok()?;
        let started = Watchdog::start(
            listener,
            Arc::clone(peers),
            self.events.clone(),
            Arc::clone(&self.stats),
            self.config.max_pending,
            self.config.send_timeout,
        );
        match started {
            Ok(watchdog) => Some(watchdog),
            Err(e) => {
                log::warn!("could not start the send-queue watchdog: {e}");
                None
            }
        }
    }

    /// Greets a connection through the dispatcher and asks for its reader thread;
    /// `false` if the dispatcher is gone (the server is stopping).
    fn greet_and_hand_off(
        &self,
        new: NewConnection,
        peer: SocketAddr,
        admitted: &Mutex<Admitted>,
        spawner: &Spawner,
    ) -> bool {
        let id = new.id;
        Stats::add(&self.stats.accepted, 1);
        log::debug!("{id} from {peer}");
        // The dispatcher answers `HELLO` as soon as it takes this event. The channel is
        // bounded, so when the dispatcher is far behind, this waits: new arrivals are
        // slowed, not the people already chatting.
        let connected = Event::Connected {
            id,
            transport: new.connection.clone(),
        };
        if self.events.send(connected).is_err() {
            return false; // the dispatcher is gone: the server is stopping
        }
        // Before the spawner has it: once its thread exists it may end at once, and the
        // other accepting thread may then hear of the end (`release`) before this one
        // had admitted it, which would leave it in the map for good.
        admitted.lock().admit(id, peer);
        spawner.spawn(new);
        true
    }

    /// Tells a client why it cannot come in, and closes.
    fn refuse(&self, stream: &TcpStream, reason: &str) {
        Stats::add(&self.stats.refused, 1);
        log::info!("refused a connection: {reason}");
        say_bye(stream, reason);
    }

    /// A connection that arrives while the server stops. Not a refusal: it is not
    /// counted or logged as one (the first is usually `Server::shutdown`'s own
    /// wake-up connection).
    fn turn_away(&self, stream: &TcpStream) {
        log::debug!("turned away a connection: the server is stopping");
        say_bye(stream, "server shutting down");
    }

    /// Says `BYE` to every connection still waiting in the listen queue, instead of
    /// letting the listener's close reset them: they are clients who believe they
    /// are connected.
    fn turn_away_the_queue(&self) {
        if self.listener.set_nonblocking(true).is_err() {
            return;
        }
        // Bounded: the queue holds at most the backlog (128), plus what arrives now.
        for _ in 0..1024 {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // An accepted socket inherits nothing from the listener's
                    // non-blocking mode on Linux, but be explicit for other systems.
                    let _ = stream.set_nonblocking(false);
                    self.turn_away(&stream);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // WouldBlock: the queue is empty
            }
        }
    }
}

/// Wakes a thread blocked in `accept` on the listener at `listener` (its stop flag set
/// first): a blocking `accept` cannot be interrupted, but a connection ends it. The
/// connection comes from this machine, so a listener on every address (`0.0.0.0`,
/// `::`) is reached through the loopback address.
pub(crate) fn wake_accept(listener: SocketAddr) {
    wake_accept_within(listener, Duration::from_secs(1));
}

/// [`wake_accept`], giving up on the connection after `patience`.
fn wake_accept_within(listener: SocketAddr, patience: Duration) {
    let mut wake = listener;
    if wake.ip().is_unspecified() {
        wake.set_ip(match wake {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let _ = TcpStream::connect_timeout(&wake, patience);
}

/// Writes `BYE <reason>` to a brand-new socket and half-closes it. Its buffer is empty,
/// so this short write cannot block; the timeout is there all the same.
fn say_bye(stream: &TcpStream, reason: &str) {
    let _ = stream.set_write_timeout(Some(SMALLEST_WRITE_TIMEOUT));
    let mut stream = stream;
    let _ = stream.write_all(Reply::Bye { reason }.to_line().as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    discard_input(stream);
}

/// Reads off whatever the client already sent (without waiting, at most 64 KiB):
/// closing a socket with unread input makes the kernel send a reset, which can destroy
/// the `BYE` before the client reads it.
pub(crate) fn discard_input(mut stream: &TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut buffer = [0u8; 1024];
    for _ in 0..64 {
        match stream.read(&mut buffer) {
            Ok(n) if n > 0 => {}
            _ => return, // nothing (more) to read, or the end
        }
    }
}

/// What `--max-per-ip` counts as one source. An IPv4 address is one source (an
/// IPv4-mapped IPv6 address, `::ffff:a.b.c.d`, is the same IPv4 address). An IPv6 host
/// usually owns a whole /64 and can pick any address in it, so for IPv6 the /64 prefix
/// is the source; otherwise one machine could open unlimited connections.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
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

    #[test]
    fn admitted_forgets_ended_connections_and_their_peers() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let peer = |port| SocketAddr::new(a, port);
        let mut admitted = Admitted::default();
        admitted.admit(ClientId(1), peer(1));
        admitted.admit(ClientId(2), peer(2));
        admitted.admit(ClientId(3), peer(3));
        let (ended_tx, ended) = crossbeam_channel::unbounded();
        ended_tx.send(ClientId(1)).unwrap();
        ended_tx.send(ClientId(3)).unwrap();
        ended_tx.send(ClientId(99)).unwrap(); // unknown: ignored
        admitted.release(&ended);
        assert_eq!(admitted.len(), 1);
        assert_eq!(admitted.peers.lock().len(), 1);
        assert_eq!(admitted.peers.lock().get(&peer(2)), Some(&ClientId(2)));
    }

    #[test]
    fn users_are_counted_per_source_and_given_back() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let users = Sources::new(2);
        assert!(users.take(a) && users.take(a));
        assert!(!users.take(a), "a third from one address");
        assert!(users.take(b), "another address has its own count");
        users.give_back(a);
        assert!(users.take(a), "a place given back is free again");
        let unlimited = Sources::new(0);
        assert!((0..100).all(|_| unlimited.take(a)));
    }
}

//! The send-queue watchdog: finds clients that stopped reading while the kernel is
//! still buffering for them, and has them dropped as too slow.
//!
//! # Why the server's own buffer is not enough
//!
//! `--max-pending` bounds what waits in the server's memory for a client, and a socket
//! that takes nothing for `--send-timeout` is dropped. But Linux grows a socket's send
//! buffer on its own, up to `net.ipv4.tcp_wmem` (4 MiB by default), and the client's
//! receive buffer holds more: a client that stops reading can absorb megabytes, for
//! minutes at chat rates, before a single `write` is refused. Std cannot read or
//! bound a socket's queue (no `SIOCOUTQ`, no `SO_SNDBUF`), but Linux publishes every
//! socket's send queue in `/proc/net/tcp` (`tx_queue`: bytes written and not yet
//! acknowledged by the peer). A client that reads keeps that near zero; one whose
//! window has closed lets it grow.
//!
//! So this thread, once a second, reads the send queues of the server's connections,
//! and a client whose queue stays above `--max-pending` for `--send-timeout` is
//! reported to the dispatcher (`Event::Fatal`, too slow), which drops it like any
//! other slow reader. The file lists every TCP socket of the machine and is not cheap
//! (0.2 s of a core with 30,000 sockets here), so it is read only when it can find
//! something: when at least `--max-pending` bytes went, since the last look, to clients
//! that had each been sent `--max-pending` bytes since they connected (no one else's
//! queue can be over the limit), or when the last look found someone over half the
//! limit (a queue carries over from one look to the next). An idle server never pays
//! for it, nor does a storm of new clients (one `HELLO` each); busy traffic costs one
//! read a second.
//!
//! `tx_queue` counts bytes not yet *acknowledged*, which includes bytes still in
//! flight: a client on a link that holds more than `--max-pending` in flight (bandwidth
//! × round trip) for `--send-timeout` under sustained traffic would be dropped too.
//! At chat rates that does not happen; raise `--max-pending` for such links. Where the file does
//! not exist (not Linux), the watchdog does nothing and the limits above remain.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::event::{ClientId, CloseReason, Event};
use crate::stats::Stats;

/// How often the send queues are looked at (when there was traffic).
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Which connection each peer address is: filled by the acceptor, read here. Keys go
/// through [`peer_key`].
pub(crate) type Peers = Arc<Mutex<HashMap<SocketAddr, ClientId>>>;

/// An address as `/proc/net/tcp` can show it: an IPv6 address's scope and flow label
/// (which `accept` may fill in, for a link-local peer) are not part of it.
pub(crate) fn peer_key(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip(), address.port())
}

/// The handle that stops the watchdog thread (when dropped) and waits for it.
pub(crate) struct Watchdog {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    /// Starts watching the connections of the listener bound to `listener`.
    pub(crate) fn start(
        listener: SocketAddr,
        peers: Peers,
        events: Sender<Event>,
        stats: Arc<Stats>,
        max_queued: usize,
        patience: Duration,
    ) -> std::io::Result<Watchdog> {
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let mut state = WatchState {
            listener,
            peers,
            events,
            stats,
            max_queued: max_queued as u64,
            patience,
            over_since: HashMap::new(),
            close_to_limit: false,
            written_at_last_look: 0,
        };
        let thread = thread::Builder::new()
            .name("sendq-watch".into())
            .spawn(move || state.run(&stopped))?;
        Ok(Watchdog { stop, thread })
    }

    /// Stops the thread and waits for it (at most one look at the file).
    pub(crate) fn finish(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

struct WatchState {
    listener: SocketAddr,
    peers: Peers,
    events: Sender<Event>,
    stats: Arc<Stats>,
    max_queued: u64,
    patience: Duration,
    /// Peers whose send queue is over the limit, and since when.
    over_since: HashMap<SocketAddr, Instant>,
    /// Someone's queue was over half the limit at the last look: look again in a
    /// second whatever the traffic, since a queue carries over from look to look.
    close_to_limit: bool,
    written_at_last_look: u64,
}

impl WatchState {
    fn run(&mut self, stopped: &Receiver<()>) {
        loop {
            match stopped.recv_timeout(LOOK_EVERY) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return, // the acceptor has stopped
            }
            let written = Stats::get(&self.stats.watched_bytes);
            let enough_traffic = written - self.written_at_last_look >= self.max_queued;
            if !enough_traffic && !self.close_to_limit {
                continue;
            }
            self.written_at_last_look = written;
            let Some(queues) = send_queues(self.listener) else {
                return; // no /proc/net/tcp here: nothing to watch
            };
            self.look(queues, Instant::now());
        }
    }

    /// Updates who is over the limit, and reports those over it for too long.
    fn look(&mut self, queues: Vec<(SocketAddr, u64)>, now: Instant) {
        self.close_to_limit = queues
            .iter()
            .any(|&(_, queued)| queued > self.max_queued / 2);
        let over: HashMap<SocketAddr, u64> = queues
            .into_iter()
            .filter(|&(_, queued)| queued > self.max_queued)
            .collect();
        self.over_since.retain(|peer, _| over.contains_key(peer));
        for peer in over.keys() {
            self.over_since.entry(*peer).or_insert(now);
        }
        let stalled: Vec<SocketAddr> = self
            .over_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= self.patience)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in stalled {
            self.over_since.remove(&peer);
            let Some(id) = self.peers.lock().get(&peer).copied() else {
                continue;
            };
            log::debug!("{id}: {} bytes unacknowledged in the kernel", over[&peer]);
            Stats::add(&self.stats.send_queue_drops, 1);
            let reason = CloseReason::TooSlow;
            let _ = self.events.send(Event::Fatal { id, reason });
        }
    }
}

/// The send queue of every established connection to `listener`'s port, by peer
/// address; `None` where the file does not exist. Only the listener's own family's file
/// is read: an IPv4 listener's connections are all in `/proc/net/tcp`, an IPv6 one's
/// (IPv4 clients included, as mapped addresses) all in `/proc/net/tcp6`, and the file
/// is the expensive part.
fn send_queues(listener: SocketAddr) -> Option<Vec<(SocketAddr, u64)>> {
    let path = match listener {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = fs::read_to_string(path).ok()?;
    let port = listener.port();
    Some(
        text.lines()
            .filter_map(|line| parse_line(line, port))
            .collect(),
    )
}

/// One line of `/proc/net/tcp`:
/// `  1: 0100007F:07E6 0100007F:D2A4 01 00000000:00000000 …`
/// (local address, remote address, state, `tx_queue:rx_queue`, all hexadecimal).
/// Gives the peer and its send queue for an established (`01`) connection to our port.
fn parse_line(line: &str, local_port: u16) -> Option<(SocketAddr, u64)> {
    let mut fields = line.split_whitespace().skip(1);
    let local = parse_address(fields.next()?)?;
    if local.port() != local_port {
        return None;
    }
    let peer = parse_address(fields.next()?)?;
    if fields.next()? != "01" {
        return None; // not ESTABLISHED
    }
    let (tx_queue, _) = fields.next()?.split_once(':')?;
    Some((peer, u64::from_str_radix(tx_queue, 16).ok()?))
}

/// `0100007F:07E6` (IPv4) or 32 hex digits and a port (IPv6). The kernel prints the
/// address as 32-bit words in the machine's own byte order, hence `to_ne_bytes`.
fn parse_address(field: &str) -> Option<SocketAddr> {
    let (address, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = address.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(peer_key(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_established_connections_to_our_port() {
        let ours = "   1: 0100007F:07E6 0200007F:D2A4 01 0001F400:00000000 00:00000000 00000000     0        0 0 3";
        let listener = "   0: 00000000:07E6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 536 1";
        let other_port = "   2: 0100007F:1F90 0100007F:D2A5 01 00000010:00000000 00:00000000 00000000     0        0 0 3";
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_line(ours, 2022),
                Some(("127.0.0.2:53924".parse().unwrap(), 128_000))
            );
        }
        assert_eq!(parse_line(listener, 2022), None);
        assert_eq!(parse_line(other_port, 2022), None);
        assert_eq!(
            parse_line("  sl  local_address rem_address   st", 2022),
            None
        );
        assert_eq!(parse_line("garbage", 2022), None);
    }

    #[test]
    fn parses_ipv6_addresses() {
        if cfg!(target_endian = "little") {
            let mapped = parse_address("0000000000000000FFFF00000100007F:07E6").unwrap();
            assert_eq!(mapped, "[::ffff:127.0.0.1]:2022".parse().unwrap());
            let loopback = parse_address("00000000000000000000000001000000:0050").unwrap();
            assert_eq!(loopback, "[::1]:80".parse().unwrap());
        }
        assert_eq!(parse_address("0100007F"), None);
        assert_eq!(parse_address("XYZ:07E6"), None);
    }

    #[test]
    fn a_queue_over_the_limit_for_long_enough_is_reported() {
        let (events, inbox) = crossbeam_channel::unbounded();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let peers: Peers = Arc::default();
        peers.lock().insert(peer, ClientId(7));
        let mut state = WatchState {
            listener: "127.0.0.1:2022".parse().unwrap(),
            peers,
            events,
            stats: Arc::default(),
            max_queued: 1000,
            patience: Duration::from_secs(2),
            over_since: HashMap::new(),
            close_to_limit: false,
            written_at_last_look: 0,
        };
        let t0 = Instant::now();
        state.look(vec![(peer, 5000)], t0);
        state.look(vec![(peer, 5000)], t0 + Duration::from_secs(1));
        assert!(inbox.try_recv().is_err(), "reported too early");
        // It read a little: back under the limit, the clock starts again.
        state.look(vec![(peer, 10)], t0 + Duration::from_millis(1500));
        state.look(vec![(peer, 5000)], t0 + Duration::from_secs(3));
        state.look(vec![(peer, 5000)], t0 + Duration::from_millis(4500));
        assert!(inbox.try_recv().is_err(), "reported too early");
        state.look(vec![(peer, 5000)], t0 + Duration::from_secs(5));
        match inbox.try_recv() {
            Ok(Event::Fatal { id, reason }) => {
                assert_eq!((id, reason), (ClientId(7), CloseReason::TooSlow));
            }
            _ => panic!("not reported"),
        }
    }
}

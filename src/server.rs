//! [`Server`]: the whole chat server in-process, and the handle to control it.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::acceptor::Acceptor;
use crate::config::Config;
use crate::dispatcher::{Dispatcher, OBSERVER_QUEUE};
use crate::event::{ChatEvent, Event, IdSource, OperatorError, OperatorRequest};
use crate::fdtable;
use crate::limits::{self, connection_cap, Cap, Slots, Sources};
use crate::netstat;
use crate::stats::Stats;
use crate::table::{SharedTable, Snapshot};

/// A running Underworld-Line server: a listener, its acceptor thread, one thread per
/// connection, the dispatcher and its flusher.
///
/// `Server` is a cheap, cloneable handle (`Send + Sync`): any thread can push notices,
/// look at who is online, shut the server down, or wait for it.
///
/// ```
/// use underworld_line::{Config, Server};
/// use std::io::{BufRead, BufReader};
/// use std::net::TcpStream;
///
/// let server = Server::bind("127.0.0.1:0", Config::default()).unwrap();
/// let mut client = BufReader::new(TcpStream::connect(server.local_addr()).unwrap());
/// let mut hello = String::new();
/// client.read_line(&mut hello).unwrap();
/// assert!(hello.starts_with("HELLO "));
///
/// server.shutdown();
/// server.join();
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    local_addr: SocketAddr,
    events: Sender<Event>,
    table: SharedTable,
    stats: Arc<Stats>,
    cap: Cap,
    started: Instant,
    /// The kernel's `ListenOverflows` when the server started (system-wide counter).
    listen_overflows_at_start: Option<u64>,
    stopping: Arc<AtomicBool>,
    dispatcher: Dispatcher,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    #[cfg(feature = "redis")]
    cluster: Option<crate::cluster::ClusterConfig>,
    /// The web listener (feature `web`), when `Config::web` asked for one.
    #[cfg(feature = "web")]
    web: Option<crate::web::WebListener>,
}

impl Inner {
    fn shutdown(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.events.send(Event::Shutdown);
        #[cfg(feature = "web")]
        if let Some(web) = &self.web {
            web.stop();
        }
        crate::acceptor::wake_accept(self.local_addr);
    }
}

/// A backstop, not the way to stop a server: when the last handle goes away without
/// [`Server::shutdown`], the server is shut down anyway (without waiting for it, since a
/// destructor should not block), so dropping a server never leaves its threads and
/// sockets running with nobody able to stop them.
impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.inner.local_addr)
            .field("cap", &self.inner.cap.max_clients)
            .finish_non_exhaustive()
    }
}

/// Compile-time proof that the handle can be shared between threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Server>();
};

impl Server {
    /// Binds `addr` and starts serving.
    pub fn bind(addr: impl ToSocketAddrs, config: Config) -> io::Result<Server> {
        Server::from_listener(TcpListener::bind(addr)?, config)
    }

    /// Serves on a listener the caller already has (from systemd, or bound by a test).
    pub fn from_listener(listener: TcpListener, config: Config) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let cap = connection_cap(config.max_clients);
        // Before the server's threads exist, while growing is cheap: a table that had
        // to grow during a storm of arrivals would stall `accept` (see `fdtable.rs`).
        fdtable::make_room_for(cap.max_clients + limits::RESERVED_FDS);
        #[cfg(feature = "redis")]
        let cluster = config.cluster.clone();
        let config = Arc::new(config);
        log::info!("listening on {local_addr}; connection cap {cap}");
        let ids = Arc::new(IdSource::new());
        // One cap for every listener: together they must stay below the thread limit.
        let slots = Arc::new(Slots::new(cap.max_clients));
        // And one `--max-per-ip` count for every way in (TCP, WebSocket, polling).
        let users = Arc::new(Sources::new(config.max_per_ip));
        let dispatcher = Dispatcher::spawn(Arc::clone(&config), true)?;
        let events = dispatcher.sender();
        let stats = Arc::clone(dispatcher.stats());
        let stopping = Arc::new(AtomicBool::new(false));
        #[cfg(feature = "web")]
        let web = match &config.web {
            Some(web) => Some(crate::web::WebListener::start(
                web,
                Arc::clone(&config),
                events.clone(),
                Arc::clone(&ids),
                Arc::clone(&slots),
                Arc::clone(&users),
            )?),
            None => None,
        };
        let acceptor = Acceptor {
            listener,
            events: events.clone(),
            config,
            stats: Arc::clone(&stats),
            slots,
            users,
            stopping: Arc::clone(&stopping),
            ids: Arc::clone(&ids),
        };
        let acceptor = match acceptor.start() {
            Ok(acceptor) => acceptor,
            Err(e) => {
                // Do not leave the web listener serving without its server.
                #[cfg(feature = "web")]
                if let Some(web) = &web {
                    web.stop();
                }
                return Err(e);
            }
        };
        Ok(Server {
            inner: Arc::new(Inner {
                local_addr,
                events,
                table: Arc::clone(dispatcher.table()),
                stats,
                cap,
                started: Instant::now(),
                listen_overflows_at_start: netstat::tcp_ext("ListenOverflows"),
                stopping,
                dispatcher,
                acceptor: Mutex::new(Some(acceptor)),
                #[cfg(feature = "redis")]
                cluster,
                #[cfg(feature = "web")]
                web,
            }),
        })
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Starts a graceful shutdown and returns at once: stop accepting, say
    /// `BYE server shutting down` to every client, close every connection. Call
    /// [`join`](Self::join) to wait for it to finish.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Waits until every thread of the server has ended. Returns at once if it already
    /// has; may be called from several threads.
    pub fn join(&self) {
        #[cfg(feature = "web")]
        if let Some(web) = &self.inner.web {
            web.join();
        }
        if let Some(acceptor) = self.inner.acceptor.lock().take() {
            if acceptor.join().is_err() {
                log::error!("the acceptor thread panicked");
            }
        }
        self.inner.dispatcher.join();
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Pushes `NOTICE <text>` to everyone online; returns how many got it.
    pub fn notice_all(&self, text: &str) -> Result<usize, OperatorError> {
        self.request(|done| OperatorRequest::Notice {
            room: None,
            text: text.to_string(),
            done,
        })
    }

    /// Pushes `NOTICE <text>` to the members of one room; returns how many got it.
    pub fn notice_room(&self, room: &str, text: &str) -> Result<usize, OperatorError> {
        self.request(|done| OperatorRequest::Notice {
            room: Some(room.to_string()),
            text: text.to_string(),
            done,
        })
    }

    /// Sends `DM server <nick> <text>` to one user. Nicks are compared by their look,
    /// so `ALICE` reaches `alice`: returns the nick that matched, as it is spelled online.
    pub fn whisper(&self, nick: &str, text: &str) -> Result<String, OperatorError> {
        self.request(|done| OperatorRequest::Whisper {
            to: nick.to_string(),
            text: text.to_string(),
            done,
        })
    }

    /// Disconnects a user with `BYE kicked: <reason>`; their room sees the same reason.
    /// Returns the nick that matched, as for [`whisper`](Self::whisper).
    pub fn kick(&self, nick: &str, reason: &str) -> Result<String, OperatorError> {
        self.request(|done| OperatorRequest::Kick {
            nick: nick.to_string(),
            reason: reason.to_string(),
            done,
        })
    }

    /// A stream of everything that happens from now on: joins, leaves, nick changes,
    /// messages (not private messages).
    ///
    /// In cluster mode (feature `redis`) these are this node's events: what its own
    /// users do, and nothing of the other nodes' users, even in rooms they share (a
    /// remote user's message, join or leave is delivered to this node's users but not
    /// reported here). Run an observer on each node to see the whole cluster. Events are dropped for this receiver if it
    /// falls more than 4,096 behind, so a slow observer never slows the chat; the
    /// count of dropped events is in [`Stats::observer_drops`].
    ///
    /// "From now on" means from when the dispatcher handles the request: clients may
    /// connect between `bind` and `subscribe`, so subscribe first thing, and use
    /// [`snapshot`](Self::snapshot) for who was already there. The stream ends (the
    /// channel disconnects) when the server has stopped.
    pub fn subscribe(&self) -> Receiver<ChatEvent> {
        let (observer, events) = crossbeam_channel::bounded(OBSERVER_QUEUE);
        let _ = self
            .inner
            .events
            .send(Event::Operator(OperatorRequest::Subscribe(observer)));
        events
    }

    /// A copy of who is online **on this node** and in which room (a short look at the
    /// user table; it never waits on the network).
    ///
    /// In cluster mode (feature `redis`) this is this node's view only: the users of
    /// the other nodes are not in it, and the room sizes count this node's members.
    /// For every node's users, as the console's `/users` and `/rooms` show them, use
    /// [`roster`](Self::roster).
    pub fn snapshot(&self) -> Snapshot {
        self.inner.table.lock().snapshot()
    }

    /// Who is online and where, on **every node** of the cluster: each live node's
    /// users as the register in Redis holds them, and this node's own from its table
    /// (the truth about them), sorted by nick; the rooms with their sizes across the
    /// cluster, by name. It is what the console's `/users` and `/rooms` list.
    ///
    /// In cluster mode this waits, on the calling thread, for the register thread to
    /// read the register (a round trip to Redis, once the requests queued before it are
    /// done; each command gives up after a second); the dispatcher hands the request on
    /// and never waits for it. Not linked, the register unreadable, or not in cluster
    /// mode: the same as [`snapshot`](Self::snapshot).
    pub fn roster(&self) -> Snapshot {
        #[cfg(feature = "redis")]
        if let Some(cluster) = self.cluster() {
            let (done, answer) = crossbeam_channel::bounded(1);
            let asked = self
                .inner
                .events
                .send(Event::Operator(OperatorRequest::Roster { done }));
            // A dropped `done` (the node stopping) counts as "could not be read".
            let nodes = asked.ok().and_then(|()| answer.recv().ok().flatten());
            if let Some(nodes) = nodes {
                // Taken after the answer: this node's users as they are now.
                let local = self.snapshot();
                return crate::cluster::roster::snapshot(&cluster.node, nodes, local);
            }
        }
        self.snapshot()
    }

    /// Running totals (connections, messages, deliveries…).
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The connection cap in force, and which OS limit decided it.
    pub fn cap(&self) -> &Cap {
        &self.inner.cap
    }

    /// Connections the kernel dropped since this server started because an accept queue
    /// was full (`ListenOverflows` in `/proc/net/netstat`). The counter is
    /// system-wide: on a machine that runs only this server, it is this server's. `None`
    /// where the kernel does not say.
    pub fn listen_overflows(&self) -> Option<u64> {
        let now = netstat::tcp_ext("ListenOverflows")?;
        Some(now.saturating_sub(self.inner.listen_overflows_at_start?))
    }

    /// Cluster mode (feature `redis`): this node's cluster settings; `None` for a single
    /// node. Whether it is linked to Redis right now is [`Stats::cluster_linked`].
    #[cfg(feature = "redis")]
    pub fn cluster(&self) -> Option<&crate::cluster::ClusterConfig> {
        self.inner.cluster.as_ref()
    }

    /// The web listener's address (feature `web`), when [`Config::web`] asked for one.
    #[cfg(feature = "web")]
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.inner.web.as_ref().map(|web| web.local_addr())
    }

    /// How long the server has been running.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Sends a request to the dispatcher and waits for its answer.
    fn request<T>(
        &self,
        make: impl FnOnce(Sender<Result<T, OperatorError>>) -> OperatorRequest,
    ) -> Result<T, OperatorError> {
        let (done, result) = crossbeam_channel::bounded(1);
        self.inner
            .events
            .send(Event::Operator(make(done)))
            .map_err(|_| OperatorError::Stopped)?;
        result.recv().unwrap_or(Err(OperatorError::Stopped))
    }
}

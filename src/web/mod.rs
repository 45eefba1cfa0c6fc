//! The web listener (cargo feature `web`, flag `--web-addr HOST:PORT`): the chat in a
//! browser, on the same dispatcher as the raw TCP clients.
//!
//! A second listener, run the same way as the first: one `web-acceptor` thread, one
//! `web-N` thread per connection, every line published to the one dispatcher as an
//! [`Event`], which writes to every kind of client through a
//! [`Transport`](crate::transport::Transport). On this listener:
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the chat page (`page.html`, compiled into the binary) |
//! | `GET /ws` | a WebSocket: each text message is one protocol-v1 line, both ways |
//! | `POST /session` | a polling session: a new user; the body is its token |
//! | `POST /session/TOKEN/send` | the body is one line from that user |
//! | `GET /session/TOKEN/poll?since=N&wait=S` | the lines from number `N` on, at once or within `S` seconds |
//!
//! | file | its one job |
//! |---|---|
//! | `mod.rs` | the settings; starting and stopping the listener |
//! | `acceptor.rs` | the `web-acceptor` thread: accept, caps, one thread per connection |
//! | `http.rs` | one request read under a deadline and size limits (httparse); responses |
//! | `routes.rs` | which endpoint answers a request, and the HTTP errors |
//! | `websocket.rs` | the upgrade and the WebSocket reader loop |
//! | `ws_transport.rs` | [`WsConnection`]: how the dispatcher writes to a WebSocket |
//! | `sessions.rs` | HTTP polling sessions: users whose lines wait in a buffer |
//! | `page.html` | the chat page: HTML, CSS and JS in one file |

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::config::Config;
use crate::event::{Event, IdSource};
use crate::limits::{Slots, Sources};

mod acceptor;
mod http;
mod joiner;
mod routes;
mod sessions;
mod websocket;
mod ws_transport;

pub use ws_transport::WsConnection;

/// The chat page, compiled into the binary: no files to install, no CDN, no build step.
pub const PAGE: &str = include_str!("page.html");

/// The web listener's settings ([`Config::web`](crate::Config::web)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Where to listen (`--web-addr`), e.g. `127.0.0.1:8080`.
    pub addr: String,
    /// How long one request may take to arrive, head and body, and how long a kept-alive
    /// connection may wait for its next request. Default 10 s: a slow or half-sent
    /// request (slowloris) holds a thread no longer than this.
    pub request_timeout: Duration,
    /// The longest a long poll may wait (`wait=` is capped to it). Default 30 s, below
    /// the usual proxies' 60 s.
    pub long_poll_max: Duration,
    /// A polling session whose client has made no request for this long is gone: it
    /// leaves as `connection closed`, as a TCP client that vanished. Default 60 s.
    pub session_gone: Duration,
}

impl WebConfig {
    /// Settings to listen on `addr`, with the defaults above.
    pub fn new(addr: &str) -> WebConfig {
        WebConfig {
            addr: addr.to_string(),
            request_timeout: Duration::from_secs(10),
            long_poll_max: Duration::from_secs(30),
            session_gone: Duration::from_secs(60),
        }
    }
}

/// What every web connection thread needs, shared.
pub(crate) struct Context {
    pub(crate) config: Arc<Config>,
    pub(crate) web: WebConfig,
    pub(crate) events: Sender<Event>,
    pub(crate) ids: Arc<IdSource>,
    pub(crate) sessions: sessions::Sessions,
    /// `--max-per-ip` for users (a WebSocket, a polling session), shared with the TCP
    /// listener: one count per address, whichever way its users came in.
    pub(crate) users: Arc<Sources>,
    /// Open HTTP connections per address (requests, not users), capped at
    /// `--max-per-ip` too, so one address cannot hold every connection thread. A
    /// connection that becomes a WebSocket moves from here to `users`.
    pub(crate) open_requests: acceptor::PerSource,
    /// Set when the server stops: new sessions and upgrades are refused.
    pub(crate) stopping: Arc<AtomicBool>,
}

/// A running web listener, as the [`Server`](crate::Server) holds it.
pub(crate) struct WebListener {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// Dropped to stop the `web-sessions` thread.
    stop_reaper: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl WebListener {
    /// Binds `web.addr` and starts the `web-acceptor` and `web-sessions` threads.
    pub(crate) fn start(
        web: &WebConfig,
        config: Arc<Config>,
        events: Sender<Event>,
        ids: Arc<IdSource>,
        slots: Arc<Slots>,
        users: Arc<Sources>,
    ) -> io::Result<WebListener> {
        let listener = TcpListener::bind(&web.addr)?;
        let local_addr = listener.local_addr()?;
        log::info!("web listener on http://{local_addr}/");
        let stopping = Arc::new(AtomicBool::new(false));
        let context = Arc::new(Context {
            sessions: sessions::Sessions::new(
                &config,
                events.clone(),
                Arc::clone(&ids),
                Arc::clone(&users),
            ),
            users,
            open_requests: Arc::default(),
            config,
            web: web.clone(),
            events,
            ids,
            stopping: Arc::clone(&stopping),
        });
        let (stop_reaper, reaper_stops) = crossbeam_channel::bounded(0);
        let reaper = sessions::start_reaper(Arc::clone(&context), reaper_stops)?;
        let acceptor = {
            let stopping = Arc::clone(&stopping);
            thread::Builder::new()
                .name("web-acceptor".into())
                .spawn(move || acceptor::run(listener, &context, &stopping, &slots))?
        };
        Ok(WebListener {
            local_addr,
            stopping,
            stop_reaper: Mutex::new(Some(stop_reaper)),
            threads: Mutex::new(vec![acceptor, reaper]),
        })
    }

    /// The address it listens on (useful after binding port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting; returns at once.
    pub(crate) fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop_reaper.lock().take();
        crate::acceptor::wake_accept(self.local_addr);
    }

    /// Waits for the listener's threads (and, through the acceptor, every connection
    /// thread) to end.
    pub(crate) fn join(&self) {
        let mut threads = self.threads.lock();
        for thread in threads.drain(..) {
            if thread.join().is_err() {
                log::error!("a web listener thread panicked");
            }
        }
    }
}

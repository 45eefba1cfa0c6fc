//! `GET /ws`: the upgrade, then the WebSocket reader loop of one user.
//!
//! After the upgrade the connection is a user like a TCP client: the dispatcher hears
//! `Connected` (and greets it with `HELLO`), every text message is a line handed to the
//! same [`Reader`] as a TCP client's lines (flood limit, idle timeout, `/quit`), and the
//! dispatcher writes back through a [`WsConnection`]. Limits map one to one:
//!
//! | TCP client | WebSocket client |
//! |---|---|
//! | a line over `--max-line` → `ERR line-too-long` | a message over `--max-line` → the same |
//! | `--max-unterminated` bytes without LF → `BYE line too long` | a message over `--max-unterminated` → the same (tungstenite's message size limit) |
//! | a line not UTF-8 → `ERR invalid-utf8`, and reading goes on | a text message not UTF-8 → `BYE invalid utf-8`, close code 1007 (RFC 6455 requires closing) |
//! | idle, flood, slow reader | the same, unchanged |
//!
//! Pings are answered with pongs by tungstenite; `BYE <reason>` is followed by a close
//! frame carrying the reason.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Error, Message, WebSocket};

use super::http::{Request, Response};
use super::ws_transport::WsConnection;
use super::Context;
use crate::connection::{Reader, SendOnDrop};
use crate::event::{CloseReason, Event};
use crate::frame::LineFramer;
use crate::transport::TcpConnection;

/// Once closing, stop reading after this long whatever the peer does (as for TCP).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that a `GET /ws` is a WebSocket upgrade we accept: `426` for a plain `GET`,
/// `400` for a malformed upgrade, `403` for a page of another site, `503` while
/// stopping.
pub(super) fn check_upgrade(request: &Request, context: &Context) -> Result<(), Response> {
    let has = |name: &str, token: &str| {
        request.header(name).is_some_and(|value| {
            value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has("upgrade", "websocket") {
        return Err(
            Response::error(426, "this is a WebSocket endpoint").with("Upgrade", "websocket")
        );
    }
    if !has("connection", "upgrade")
        || request.header("sec-websocket-version") != Some("13")
        || request.header("sec-websocket-key").is_none()
    {
        return Err(Response::error(400, "not a valid WebSocket upgrade")
            .with("Sec-WebSocket-Version", "13"));
    }
    // A page of another site may not make its visitors chat here (cross-site WebSocket
    // hijacking): browsers always send Origin, and it must name this host.
    if let Some(origin) = request.header("origin") {
        let origin_host = origin.split_once("://").map_or(origin, |(_, host)| host);
        if request.header("host") != Some(origin_host) {
            return Err(Response::error(403, "cross-origin WebSocket refused"));
        }
    }
    if context.stopping.load(Ordering::SeqCst) {
        return Err(Response::error(503, "the server is stopping"));
    }
    Ok(())
}

/// Completes the upgrade, then reads the user's messages until the connection ends.
/// `early` holds bytes the client sent after its request head (its first frames).
pub(super) fn serve(
    tcp: &Arc<TcpConnection>,
    request: &Request,
    early: Vec<u8>,
    context: &Context,
) {
    let key = request.header("sec-websocket-key").unwrap_or_default();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let switching = Response {
        status: 101,
        headers: vec![
            ("Upgrade", "websocket".to_string()),
            ("Sec-WebSocket-Accept", accept),
        ],
        body: Vec::new(),
    };
    if write_upgrade(tcp, &switching, context.web.request_timeout).is_err() {
        return;
    }
    let id = context.ids.next();
    let connection = Arc::new(WsConnection::new(Arc::clone(tcp)));
    let connected = Event::Connected {
        id,
        transport: connection.clone(),
    };
    if context.events.send(connected).is_err() {
        return; // the dispatcher is gone: the server is stopping
    }
    log::debug!("{id} is a WebSocket");
    // From here on, the dispatcher must hear `Closed` however this ends.
    let _closed = SendOnDrop {
        events: context.events.clone(),
        id,
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(context.config.max_unterminated))
        .max_frame_size(Some(context.config.max_unterminated));
    let stream = ReaderSide {
        connection: Arc::clone(&connection),
    };
    let socket = WebSocket::from_partially_read(stream, early, Role::Server, Some(config));
    let mut user = WsUser {
        socket,
        connection: &connection,
        reader: Reader::new(id, &context.config, context.events.clone()),
        framer: LineFramer::new(context.config.max_line, context.config.max_unterminated),
        stop_reading_at: None,
    };
    user.read_until_closed();
}

/// The `101 Switching Protocols` answer: no body and no length, unlike every other
/// answer. Written blocking (with a timeout): nothing else writes this socket yet.
fn write_upgrade(tcp: &TcpConnection, response: &Response, timeout: Duration) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 101 {}\r\n", super::http::reason(101));
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: Upgrade\r\n\r\n");
    let mut stream = tcp.stream();
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(head.as_bytes())?;
    // Back to the smallest timeout: from now on writes are the dispatcher's, and
    // non-blocking (see `transport.rs`).
    stream.set_write_timeout(Some(crate::transport::SMALLEST_WRITE_TIMEOUT))
}

/// What tungstenite reads from and writes its control frames to: reads come from the
/// socket, writes go through the [`WsConnection`], in order with the dispatcher's.
struct ReaderSide {
    connection: Arc<WsConnection>,
}

impl Read for ReaderSide {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.connection.tcp().stream().read(buffer)
    }
}

impl Write for ReaderSide {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.connection.write_control(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One WebSocket user's reading side.
struct WsUser<'a> {
    socket: WebSocket<ReaderSide>,
    connection: &'a WsConnection,
    reader: Reader,
    framer: LineFramer,
    /// Set once the connection is closing: read on only to let the `BYE` arrive.
    stop_reading_at: Option<Instant>,
}

impl WsUser<'_> {
    fn read_until_closed(&mut self) {
        loop {
            if self.reader.is_draining() && self.stop_reading_at.is_none() {
                self.stop_reading_at = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            let deadline = self.stop_reading_at.unwrap_or(self.reader.idle_deadline());
            let now = Instant::now();
            if self.stop_reading_at.is_some_and(|at| now >= at) {
                return;
            }
            let timeout = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            if self
                .connection
                .tcp()
                .stream()
                .set_read_timeout(Some(timeout))
                .is_err()
            {
                return;
            }
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    if !self.lines(text.as_bytes()) {
                        return;
                    }
                }
                Ok(Message::Binary(bytes)) => {
                    if !self.lines(&bytes) {
                        return;
                    }
                }
                // Pings are answered by tungstenite itself, and each answer is a write:
                // they count against the flood limit like lines (see
                // `Reader::count_control_frame`), or one client could keep a core busy.
                Ok(Message::Ping(_) | Message::Pong(_)) => self.reader.count_control_frame(),
                // A close is answered by tungstenite, and the next read ends the loop.
                Ok(_) => {}
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(Error::Io(e)) if is_timeout(&e) => {
                    // As for TCP: the clock decides, since a write by the dispatcher
                    // may have left the socket non-blocking (see `transport.rs`).
                    if Instant::now() < deadline {
                        if self.connection.tcp().make_blocking().is_err() {
                            return;
                        }
                    } else if !self.reader.is_draining() {
                        self.reader.fatal(CloseReason::Idle);
                    }
                }
                Err(Error::Capacity(e)) => {
                    log::debug!("{e}");
                    self.reader.fatal(CloseReason::LineTooLong);
                    return;
                }
                // RFC 6455 §8.1: a text message that is not UTF-8 fails the connection.
                // Said with `BYE invalid utf-8` and close code 1007, not in silence.
                Err(Error::Utf8(e)) => {
                    log::debug!("{e}");
                    self.reader.fatal(CloseReason::InvalidUtf8);
                    return;
                }
                Err(_) => return, // closed, reset, or a protocol error
            }
        }
    }

    /// One message: its lines go to the reader, as a TCP client's. `false` when the
    /// dispatcher is gone.
    fn lines(&mut self, message: &[u8]) -> bool {
        if self.reader.is_draining() {
            return true;
        }
        let mut frames = Vec::new();
        self.framer.push(message, &mut frames);
        self.framer.push(b"\n", &mut frames);
        for frame in frames {
            if !self.reader.handle(frame) {
                return false;
            }
        }
        self.reader.pause_if_over_budget();
        true
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

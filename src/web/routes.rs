//! One web connection's thread: read a request, answer it, again while the client keeps
//! the connection alive; or hand the connection to the WebSocket reader for good.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /`, `HEAD /` | the chat page |
//! | `GET /ws` | the WebSocket upgrade (`websocket.rs`) |
//! | `POST /session` | `201`, a new polling session's token |
//! | `POST /session/TOKEN/send` | `204`; `413` over `--max-line`; `429` over the flood limit |
//! | `GET /session/TOKEN/poll?since=N&wait=S` | `200`, the lines from number `N` on (header `X-Next`) |
//! | a known path, another method | `405` with `Allow` |
//! | anything else | `404` |

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::acceptor::uncount;
use super::http::{read_request, write_response, Incoming, Request, Response};
use super::sessions::{Created, Sent};
use super::websocket;
use super::{Context, PAGE};
use crate::acceptor::discard_input;
use crate::limits::Sources;
use crate::transport::TcpConnection;

/// What answering a request led to.
enum Outcome {
    /// Send this; keep the connection if both sides want to.
    Respond(Response),
    /// A valid WebSocket upgrade: the connection is a WebSocket from now on.
    Upgrade(Request),
}

/// Serves one connection until it closes, fails, or becomes a WebSocket.
pub(super) fn serve_connection(
    connection: &Arc<TcpConnection>,
    source: IpAddr,
    upgraded: &AtomicBool,
    context: &Context,
) {
    let stream = connection.stream();
    let _ = stream.set_nodelay(true);
    let timeout = context.web.request_timeout;
    // A body is one chat line: its line end is allowed on top of `--max-line`.
    let max_body = context.config.max_line + 2;
    let mut buffer = Vec::new();
    loop {
        let deadline = Instant::now() + timeout;
        let request = match read_request(stream, &mut buffer, deadline, max_body) {
            Incoming::Request(request) => request,
            Incoming::Closed => return,
            Incoming::Refused(response) => {
                log::debug!("web: refused a request ({})", response.status);
                let _ = write_response(stream, &response, false, false, timeout);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                discard_input(stream);
                return;
            }
        };
        let head_only = request.method == "HEAD";
        match answer(&request, source, context) {
            Outcome::Respond(response) => {
                let keep_alive = request.keep_alive && !context.stopping.load(Ordering::SeqCst);
                if write_response(stream, &response, keep_alive, head_only, timeout).is_err()
                    || !keep_alive
                {
                    return;
                }
            }
            Outcome::Upgrade(request) => {
                // From now on a user, not a request: counted with the address's other
                // users (TCP, WebSocket, polling) under `--max-per-ip`.
                if !context.users.take(source) {
                    let why = "too many connections from your address";
                    let _ =
                        write_response(stream, &Response::error(429, why), false, false, timeout);
                    return;
                }
                let _user = CountedUser(&context.users, source);
                uncount(&context.open_requests, source);
                upgraded.store(true, Ordering::SeqCst);
                websocket::serve(connection, &request, std::mem::take(&mut buffer), context);
                return;
            }
        }
    }
}

/// A WebSocket user's place under `--max-per-ip`, given back when it is dropped (even
/// by a panic).
struct CountedUser<'a>(&'a Sources, IpAddr);

impl Drop for CountedUser<'_> {
    fn drop(&mut self) {
        self.0.give_back(self.1);
    }
}

/// Routes a request to its endpoint.
fn answer(request: &Request, source: IpAddr, context: &Context) -> Outcome {
    let method = request.method.as_str();
    let path = request.path.as_str();
    let session_route = path
        .strip_prefix("/session/")
        .and_then(|rest| rest.split_once('/'));
    let response = match (method, path, session_route) {
        ("GET" | "HEAD", "/", _) => page(),
        ("GET", "/ws", _) => match websocket::check_upgrade(request, context) {
            Ok(()) => return Outcome::Upgrade(strip_body(request)),
            Err(refusal) => refusal,
        },
        ("POST", "/session", _) => create_session(source, context),
        ("POST", _, Some((token, "send"))) => send_line(token, &request.body, context),
        ("GET", _, Some((token, "poll"))) => poll(token, request, context),
        (_, "/", _) => not_allowed("GET, HEAD"),
        (_, "/ws", _) => not_allowed("GET"),
        (_, "/session", _) | (_, _, Some((_, "send"))) => not_allowed("POST"),
        (_, _, Some((_, "poll"))) => not_allowed("GET"),
        _ => Response::error(404, "no such page"),
    };
    Outcome::Respond(response)
}

/// The request as the WebSocket side needs it (an upgrade has no body).
fn strip_body(request: &Request) -> Request {
    Request {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        body: Vec::new(),
        keep_alive: false,
    }
}

fn not_allowed(allow: &str) -> Response {
    Response::error(405, "method not allowed here").with("Allow", allow)
}

/// The chat page. Its content security policy allows only its own inline script and
/// style, and connections to this server: even if some text slipped into the page as
/// HTML, it could load and run nothing.
fn page() -> Response {
    Response {
        status: 200,
        headers: vec![
            ("Content-Type", "text/html; charset=utf-8".to_string()),
            (
                "Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'"
                    .to_string(),
            ),
            ("Referrer-Policy", "no-referrer".to_string()),
        ],
        body: PAGE.as_bytes().to_vec(),
    }
}

fn create_session(source: IpAddr, context: &Context) -> Response {
    if context.stopping.load(Ordering::SeqCst) {
        return Response::error(503, "the server is stopping");
    }
    match context.sessions.create(source) {
        Created::Session(token) => {
            Response::text(201, format!("{token}\n")).with("X-Session", token)
        }
        Created::TooManyFromSource => Response::error(429, "too many sessions from your address"),
        Created::Full => Response::error(503, "server full"),
        Created::DispatcherGone => Response::error(503, "the server is stopping"),
        Created::NoToken => Response::error(503, "no session token could be made"),
    }
}

fn send_line(token: &str, body: &[u8], context: &Context) -> Response {
    match context.sessions.send(token, body) {
        Sent::Accepted => Response::text(204, ""),
        Sent::RateLimited => Response::error(429, "slow down: too many lines; dropped"),
        Sent::TooLong => Response::error(413, "line too long; dropped"),
        Sent::NoSuchSession => Response::error(404, "no such session (expired?)"),
    }
}

fn poll(token: &str, request: &Request, context: &Context) -> Response {
    let number = |name: &str| -> Result<u64, Response> {
        match request.query_param(name) {
            None => Ok(0),
            Some(value) => value
                .parse()
                .map_err(|_| Response::error(400, &format!("{name} must be a whole number"))),
        }
    };
    let (since, wait) = match (number("since"), number("wait")) {
        (Ok(since), Ok(wait)) => (since, wait),
        (Err(bad), _) | (_, Err(bad)) => return bad,
    };
    let wait = Duration::from_secs(wait).min(context.web.long_poll_max);
    let Some(fetched) = context.sessions.poll(token, since, wait) else {
        return Response::error(404, "no such session (expired?)");
    };
    let mut body = String::new();
    for line in &fetched.lines {
        body.push_str(line);
        body.push('\n');
    }
    let response = Response::text(200, body).with("X-Next", fetched.next.to_string());
    if fetched.ended {
        response.with("X-Ended", "1")
    } else {
        response
    }
}

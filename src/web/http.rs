//! One HTTP/1.1 request, read under a deadline and size limits, and the responses.
//!
//! The request head is parsed by `httparse` (no I/O, no allocation: it only points into
//! our buffer); this file does the reading around it: how long we wait, how much we
//! accept, and what status a bad request gets. Responses are small and written whole.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Largest request head (request line and headers). Browsers send well under 2 KiB.
pub(super) const MAX_HEAD: usize = 8 * 1024;

/// Most headers in one request.
const MAX_HEADERS: usize = 48;

/// One parsed request.
#[derive(Debug)]
pub(super) struct Request {
    /// `GET`, `POST`…
    pub(super) method: String,
    /// The path, without the query: `/session/abc/poll`.
    pub(super) path: String,
    /// What follows `?`, or empty.
    pub(super) query: String,
    /// Header names in lower case, with their values.
    pub(super) headers: Vec<(String, String)>,
    /// The body (empty without `Content-Length`).
    pub(super) body: Vec<u8>,
    /// Whether the client wants the connection kept for another request.
    pub(super) keep_alive: bool,
}

impl Request {
    /// A header's value (names compared in lower case).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// One parameter of the query string (`since=12&wait=20`), undecoded: ours are
    /// numbers.
    pub(super) fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// What reading a request gave.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A whole request.
    Request(Request),
    /// The client closed, or sent nothing before the deadline, between two requests:
    /// close quietly.
    Closed,
    /// A bad, too large or too slow request: send this and close.
    Refused(Response),
}

/// Reads one request from `stream`. `buffer` carries bytes read past the previous
/// request (a pipelining client) and keeps what follows this one.
pub(super) fn read_request(
    stream: &TcpStream,
    buffer: &mut Vec<u8>,
    deadline: Instant,
    max_body: usize,
) -> Incoming {
    let (head_len, mut request, body_len) = loop {
        match parse_head(buffer) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if buffer.len() >= MAX_HEAD => {
                return Incoming::Refused(Response::error(431, "request head too large"))
            }
            Ok(None) => {}
            Err(refusal) => return Incoming::Refused(refusal),
        }
        match read_more(stream, buffer, deadline) {
            Ok(true) => {}
            Ok(false) if buffer.is_empty() => return Incoming::Closed,
            Ok(false) => return Incoming::Refused(Response::error(400, "request cut short")),
            Err(e) if is_timeout(&e) && buffer.is_empty() => return Incoming::Closed,
            Err(e) if is_timeout(&e) => {
                return Incoming::Refused(Response::error(408, "request too slow"))
            }
            Err(_) => return Incoming::Closed,
        }
    };
    if body_len > max_body {
        return Incoming::Refused(Response::error(413, "body too large"));
    }
    while buffer.len() < head_len + body_len {
        match read_more(stream, buffer, deadline) {
            Ok(true) => {}
            Ok(false) => return Incoming::Refused(Response::error(400, "body cut short")),
            Err(e) if is_timeout(&e) => {
                return Incoming::Refused(Response::error(408, "request too slow"))
            }
            Err(_) => return Incoming::Closed,
        }
    }
    request.body = buffer[head_len..head_len + body_len].to_vec();
    buffer.drain(..head_len + body_len);
    Incoming::Request(request)
}

/// Parses the head in `buffer`: `None` while it is incomplete; the head's length, the
/// request and its body's length when complete.
fn parse_head(buffer: &[u8]) -> Result<Option<(usize, Request, usize)>, Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Response::error(431, "too many headers"))
        }
        Err(e) => return Err(Response::error(400, &format!("malformed request: {e}"))),
    };
    let bad = |why: &str| Response::error(400, why);
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(bad("malformed request line"));
    };
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| bad("header not UTF-8"))?;
        fields.push((header.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: fields,
        body: Vec::new(),
        keep_alive: false,
    };
    let connection = request
        .header("connection")
        .unwrap_or("")
        .to_ascii_lowercase();
    request.keep_alive = match version {
        1 => !has_token(&connection, "close"),
        _ => has_token(&connection, "keep-alive"),
    };
    if request.header("transfer-encoding").is_some() {
        // Chunked bodies are not needed by any client of ours; a length is.
        return Err(Response::error(411, "send a Content-Length, not chunks"));
    }
    let mut lengths = request
        .headers
        .iter()
        .filter(|(name, _)| name == "content-length")
        .map(|(_, value)| value.as_str());
    let body_len = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some(length), None)
            if !length.is_empty() && length.bytes().all(|b| b.is_ascii_digit()) =>
        {
            length.parse().map_err(|_| bad("bad Content-Length"))?
        }
        // Two lengths are how request smuggling starts: refused, whatever they say.
        _ => return Err(bad("bad Content-Length")),
    };
    Ok(Some((head_len, request, body_len)))
}

/// Whether a comma-separated header value contains `token`.
fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim() == token)
}

/// One read into `buffer`, waiting until `deadline` at most: `Ok(false)` at the end of
/// the stream.
fn read_more(mut stream: &TcpStream, buffer: &mut Vec<u8>, deadline: Instant) -> io::Result<bool> {
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A response, written whole by [`write_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Vec<u8>,
}

impl Response {
    /// A `text/plain` response.
    pub(super) fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".to_string())],
            body: body.into(),
        }
    }

    /// An error: the status, and why in one line of text.
    pub(super) fn error(status: u16, why: &str) -> Response {
        Response::text(status, format!("{status} {}: {why}\n", reason(status)))
    }

    /// Adds a header.
    pub(super) fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// The reason phrase of each status this listener uses.
pub(super) fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `response` (headers only when `head_only`, for `HEAD`), waiting at most
/// `timeout` for a client that does not read it.
pub(super) fn write_response(
    stream: &TcpStream,
    response: &Response,
    keep_alive: bool,
    head_only: bool,
    timeout: Duration,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    // Every answer of ours is personal (a session's lines) or tiny: never cache.
    out.push_str("Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
    if response.status != 204 {
        out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    write_all_by(stream, &bytes, Instant::now() + timeout)
}

/// Writes all of `bytes` before `deadline`, or fails with `TimedOut`. The deadline is
/// for the whole response, not each `write`: a client that reads a few bytes now and
/// then would otherwise hold its thread (and a connection slot) for as long as it liked.
fn write_all_by(mut stream: &TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &str) -> Result<Option<(usize, Request, usize)>, Response> {
        parse_head(bytes.as_bytes())
    }

    #[test]
    fn heads_are_parsed_with_their_query_and_keep_alive() {
        let (len, request, body) =
            head("GET /session/x/poll?since=3&wait=5 HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(len, 56);
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", "/session/x/poll")
        );
        assert_eq!(request.query_param("since"), Some("3"));
        assert_eq!(request.query_param("wait"), Some("5"));
        assert_eq!(request.query_param("nope"), None);
        assert!(request.keep_alive);
        assert_eq!(body, 0);
        let (_, old, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!old.keep_alive);
        let (_, closing, _) = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!closing.keep_alive);
    }

    #[test]
    fn incomplete_heads_wait_and_bad_ones_get_their_status() {
        assert!(head("GET / HTTP/1.1\r\nHost:").unwrap().is_none());
        assert_eq!(head("GET / HTTP/9.9\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(head("G\0T / HTTP/1.1\r\n\r\n").unwrap_err().status, 400);
        let smuggled = "POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(head(smuggled).unwrap_err().status, 400);
        assert_eq!(
            head("POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        let chunked = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head(chunked).unwrap_err().status, 411);
        let many: String = (0..60).map(|i| format!("X-{i}: y\r\n")).collect();
        let too_many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(head(&too_many).unwrap_err().status, 431);
    }
}

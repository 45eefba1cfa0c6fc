//! Helpers for the web listener's tests (feature `web`): a server with both listeners,
//! a small HTTP client that sends exactly the bytes a test gives it, and a WebSocket
//! chat client (tungstenite's own client).

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};
use underworld_line::web::WebConfig;
use underworld_line::{Config, Server};

use crate::common::{test_config, PATIENCE};

/// A test config with the web listener on an ephemeral port of 127.0.0.1.
pub fn web_config() -> Config {
    Config {
        web: Some(WebConfig::new("127.0.0.1:0")),
        ..test_config()
    }
}

/// Starts a server with both listeners; returns it and the web listener's address.
pub fn start_web(config: Config) -> (Server, SocketAddr) {
    let server = crate::common::start_server(config);
    let web = server.web_addr().expect("the web listener is on");
    (server, web)
}

/// An HTTP response as the test reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` on a new connection and reads one response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to the web listener");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(raw).unwrap();
    read_reply(&mut stream, &mut Vec::new())
}

/// Reads one response from `stream` (`buffer` keeps bytes past it).
pub fn read_reply(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Reply {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(buffer).expect("valid response") {
            let status = response.code.unwrap();
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            while buffer.len() < head + length {
                read_some(stream, buffer);
            }
            let body = String::from_utf8_lossy(&buffer[head..head + length]).into_owned();
            buffer.drain(..head + length);
            return Reply {
                status,
                headers,
                body,
            };
        }
        read_some(stream, buffer);
    }
}

fn read_some(stream: &mut TcpStream, buffer: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).expect("read a response");
    assert!(
        n > 0,
        "connection closed before a whole response: {:?}",
        String::from_utf8_lossy(buffer)
    );
    buffer.extend_from_slice(&chunk[..n]);
}

/// `GET path` on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `POST path` with `body` on a new connection.
pub fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, request.as_bytes())
}

/// A WebSocket chat client: one protocol line per text message.
pub struct WsClient {
    pub nick: String,
    pub socket: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects to `/ws` and reads `HELLO` and the `JOIN lobby` after it.
    pub fn connect(addr: SocketAddr) -> WsClient {
        let mut client = WsClient::connect_raw(addr);
        client.nick = crate::common::nick_of_hello(&client.line());
        assert_eq!(client.line(), format!("JOIN lobby {}", client.nick));
        client
    }

    /// Connects without reading anything.
    pub fn connect_raw(addr: SocketAddr) -> WsClient {
        let (socket, response) =
            tungstenite::connect(format!("ws://{addr}/ws")).expect("WebSocket upgrade");
        assert_eq!(response.status(), 101);
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
        }
        WsClient {
            nick: String::new(),
            socket,
        }
    }

    pub fn send(&mut self, line: &str) {
        self.socket
            .send(Message::text(line))
            .expect("send a message");
    }

    /// The next text message (pongs and other control frames skipped).
    pub fn line(&mut self) -> String {
        loop {
            match self.socket.read().expect("read a message") {
                Message::Text(text) => return text.to_string(),
                Message::Close(frame) => panic!(
                    "{}: closed ({frame:?}) while a line was expected",
                    self.nick
                ),
                _ => {}
            }
        }
    }

    /// Reads messages until one equals `expected`.
    pub fn expect(&mut self, expected: &str) {
        while self.line() != expected {}
    }

    /// Reads messages until one starts with `prefix`; returns it.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Reads until the close frame, asserts that the last line before it was
    /// `BYE <reason>`, and returns the frame (which must be there).
    pub fn expect_bye_then_close(&mut self, reason: &str) -> tungstenite::protocol::CloseFrame {
        let (lines, close) = self.until_close();
        assert_eq!(
            lines.last().map(String::as_str),
            Some(format!("BYE {reason}").as_str())
        );
        close.expect("a close frame after BYE")
    }

    /// Reads until the close frame; returns every text line before it, and the frame.
    pub fn until_close(&mut self) -> (Vec<String>, Option<tungstenite::protocol::CloseFrame>) {
        let mut lines = Vec::new();
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => lines.push(text.to_string()),
                Ok(Message::Close(frame)) => return (lines, frame),
                Ok(_) => {}
                Err(e) => panic!("{}: no close frame, but {e}", self.nick),
            }
        }
    }
}

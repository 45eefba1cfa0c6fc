//! The web listener (issue 10): the page, HTTP errors, WebSocket users and polling
//! sessions, over real sockets on 127.0.0.1, each chatting with raw TCP clients.
//!
//! Only with `cargo test --features web`.

#![cfg(feature = "web")]

mod common;
mod web_helpers;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{test_config, Client, PATIENCE};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;
use underworld_line::rate::RateLimit;
use underworld_line::web::WebConfig;
use underworld_line::{ChatEvent, Config};
use web_helpers::{exchange, get, post, read_reply, start_web, web_config, WsClient};

/// `GET /` serves the page, with a content security policy that lets it load nothing
/// from elsewhere; `HEAD /` the same head without the body.
#[test]
fn the_page_is_served() {
    let (server, web) = start_web(web_config());
    let page = get(web, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("<title>Underworld-Line</title>"));
    assert!(page.body.contains("textContent"));
    assert!(
        !page.body.contains("innerHTML"),
        "the page must never render text as HTML"
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));

    let mut stream = TcpStream::connect(web).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    stream.read_to_string(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}\r\n", page.body.len())));
    assert!(
        head.ends_with("\r\n\r\n"),
        "no body after the head of a HEAD: {head}"
    );
    server.shutdown();
    server.join();
}

/// Every kind of bad request gets its own status, and the listener goes on serving.
#[test]
fn bad_requests_get_the_right_status() {
    let (server, web) = start_web(web_config());
    assert_eq!(get(web, "/nope").status, 404);
    let wrong_method = post(web, "/", "x");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD"));
    assert_eq!(get(web, "/session").status, 405);
    assert_eq!(post(web, "/ws", "").header("allow"), Some("GET"));
    assert_eq!(exchange(web, b"NONSENSE\r\n\r\n").status, 400);
    assert_eq!(
        exchange(web, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").status,
        400
    );
    let two_lengths = "POST /session HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    assert_eq!(exchange(web, two_lengths.as_bytes()).status, 400);
    let chunked = "POST /session HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(exchange(web, chunked.as_bytes()).status, 411);
    let body = "x".repeat(5000);
    assert_eq!(post(web, "/session/abc/send", &body).status, 413);
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "y".repeat(9000));
    assert_eq!(exchange(web, huge.as_bytes()).status, 431);
    assert_eq!(
        get(web, "/ws").status,
        426,
        "a plain GET of the WebSocket endpoint"
    );
    assert_eq!(post(web, "/session/not-a-token/send", "hi").status, 404);
    assert_eq!(get(web, "/session/not-a-token/poll").status, 404);
    // Still serving.
    assert_eq!(get(web, "/").status, 200);
    server.shutdown();
    server.join();
}

/// A request that stops half-way is answered `408` once the request timeout passes,
/// and its thread ends; a silent connection is closed without an answer.
#[test]
fn slow_requests_time_out() {
    let mut config = web_config();
    config.web.as_mut().unwrap().request_timeout = Duration::from_millis(300);
    let (server, web) = start_web(config);
    let half = exchange(web, b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(half.status, 408);
    let cut_body = exchange(
        web,
        b"POST /session/x/send HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert_eq!(cut_body.status, 408);

    let mut silent = TcpStream::connect(web).unwrap();
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    silent
        .read_to_end(&mut rest)
        .expect("the server closes a silent connection");
    assert!(rest.is_empty());
    server.shutdown();
    server.join();
}

/// HTTP/1.1 keeps the connection for further requests; `Connection: close` ends it.
#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let (server, web) = start_web(web_config());
    let mut stream = TcpStream::connect(web).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buffer = Vec::new();
    for _ in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let reply = read_reply(&mut stream, &mut buffer);
        assert_eq!(
            (reply.status, reply.header("connection")),
            (200, Some("keep-alive"))
        );
    }
    stream
        .write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut stream, &mut buffer).status, 404);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.shutdown();
    server.join();
}

/// A WebSocket user and a raw TCP user chat: room messages and private messages both
/// ways, each text message one protocol line.
#[test]
fn websocket_and_tcp_users_chat() {
    let (server, web) = start_web(web_config());
    let mut tcp = Client::named(server.local_addr(), "tcpuser");
    let mut ws = WsClient::connect(web);
    tcp.expect(&format!("JOIN lobby {}", ws.nick));

    ws.send("hello from the browser");
    let from_ws = format!("MSG lobby {} hello from the browser", ws.nick);
    tcp.expect(&from_ws);
    ws.expect(&from_ws);

    tcp.send("hello from the terminal <script>");
    ws.expect("MSG lobby tcpuser hello from the terminal <script>");

    ws.send("/w tcpuser psst");
    tcp.expect(&format!("DM {} tcpuser psst", ws.nick));
    tcp.send(&format!("/w {} back", ws.nick));
    ws.expect(&format!("DM tcpuser {} back", ws.nick));

    ws.send("/nick webby");
    tcp.expect(&format!("NICK {} webby", ws.nick));
    ws.send("/ping 42");
    ws.expect("PONG 42");
    server.shutdown();
    server.join();
}

/// Pings get pongs; `/quit` gets `BYE quit` then a close frame with code 1000 and the
/// same reason, and the room sees the user leave.
#[test]
fn websocket_ping_and_quit_with_a_close_frame() {
    let (server, web) = start_web(web_config());
    let mut tcp = Client::connect(server.local_addr());
    let mut ws = WsClient::connect(web);
    tcp.expect(&format!("JOIN lobby {}", ws.nick));

    ws.socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match ws.socket.read().unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }

    ws.send("/quit see you");
    let close = ws.expect_bye_then_close("quit: see you");
    assert_eq!(close.code, CloseCode::Normal);
    assert_eq!(close.reason.as_str(), "quit: see you");
    tcp.expect(&format!("LEAVE lobby {} quit: see you", ws.nick));
    server.shutdown();
    server.join();
}

/// The line limits of TCP apply to messages: over `--max-line` an `ERR`, over
/// `--max-unterminated` the connection ends with `BYE line too long`.
#[test]
fn websocket_messages_have_the_line_limits() {
    let config = Config {
        max_line: 64,
        max_unterminated: 1024,
        ..web_config()
    };
    let (server, web) = start_web(config);
    let mut ws = WsClient::connect(web);
    ws.send(&"x".repeat(65));
    assert!(ws.expect_prefix("ERR ").starts_with("ERR line-too-long"));
    ws.send("/ping still-here");
    ws.expect("PONG still-here");

    ws.send(&"y".repeat(2000));
    assert_eq!(
        ws.expect_bye_then_close("line too long").code,
        CloseCode::Size
    );
    server.shutdown();
    server.join();
}

/// A text message that is not UTF-8 (a browser never sends one; a hostile client may):
/// `BYE invalid utf-8` and close code 1007, as RFC 6455 asks, and the room sees the
/// user leave with that reason. Nothing reaches the room.
#[test]
fn a_websocket_text_message_that_is_not_utf8_closes_with_1007() {
    let (server, web) = start_web(web_config());
    let mut tcp = Client::connect(server.local_addr());
    let mut ws = WsClient::connect(web);
    tcp.expect(&format!("JOIN lobby {}", ws.nick));
    let garbage = Frame::message(vec![b'h', b'i', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    ws.socket.send(Message::Frame(garbage)).unwrap();
    let close = ws.expect_bye_then_close("invalid utf-8");
    assert_eq!(close.code, CloseCode::Invalid);
    tcp.next_is(&format!("LEAVE lobby {} invalid utf-8", ws.nick));
    server.shutdown();
    server.join();
}

/// A WebSocket user who says nothing for the idle timeout gets `BYE idle` and a close
/// frame (policy); the room sees them leave as `idle`.
#[test]
fn websocket_idle_users_are_closed() {
    let config = Config {
        idle_timeout: Duration::from_millis(400),
        ..web_config()
    };
    let (server, web) = start_web(config);
    // An observer rather than a TCP user, who would go idle too.
    let events = server.subscribe();
    let mut ws = WsClient::connect(web);
    let close = ws.expect_bye_then_close("idle");
    assert_eq!(
        (close.code, close.reason.as_str()),
        (CloseCode::Policy, "idle")
    );
    let left = ChatEvent::Left {
        nick: ws.nick.clone(),
        room: "lobby".into(),
        reason: "idle".into(),
    };
    while events
        .recv_timeout(PATIENCE)
        .expect("the room hears the leave")
        != left
    {}
    server.shutdown();
    server.join();
}

/// Shutting the server down says `BYE server shutting down` to WebSocket users, with a
/// close frame "going away" (1001).
#[test]
fn websocket_users_hear_the_shutdown() {
    let (server, web) = start_web(web_config());
    let mut ws = WsClient::connect(web);
    server.shutdown();
    let close = ws.expect_bye_then_close("server shutting down");
    assert_eq!(close.code, CloseCode::Away);
    server.join();
}

/// A web config whose flood limit a test reaches at once: a burst of 2, then a line
/// every 2 s.
fn tight_flood_limit() -> Config {
    Config {
        rate_limit: Some(RateLimit {
            burst: 2,
            per_second: 0.5,
        }),
        ..web_config()
    }
}

/// The flood limit applies to WebSocket users as to TCP users.
#[test]
fn websocket_users_are_rate_limited() {
    let (server, web) = start_web(tight_flood_limit());
    let mut ws = WsClient::connect(web);
    for i in 0..5 {
        ws.send(&format!("line {i}"));
    }
    assert!(ws.expect_prefix("ERR ").starts_with("ERR rate-limited"));
    server.shutdown();
    server.join();
}

/// WebSocket pings count against the flood limit like lines (each costs the server a
/// pong): after a burst of pings, the next line is over the limit.
#[test]
fn websocket_pings_count_against_the_flood_limit() {
    let (server, web) = start_web(tight_flood_limit());
    let mut ws = WsClient::connect(web);
    for _ in 0..10 {
        ws.socket
            .send(Message::Ping(b"flood".to_vec().into()))
            .expect("send a ping");
    }
    ws.send("/ping after-the-pings");
    assert!(ws.expect_prefix("ERR ").starts_with("ERR rate-limited"));
    server.shutdown();
    server.join();
}

/// `--max-per-ip` counts an address's users whichever way they came in: with one
/// WebSocket user in (and `--max-per-ip 1`), a TCP client from the same address is
/// told `BYE too many connections from your address`, and a second WebSocket or a
/// polling session gets `429`; the page itself still loads (a request is not a user).
/// When the WebSocket user leaves, its place is free for a TCP user.
#[test]
fn the_per_address_cap_counts_users_of_every_kind() {
    let config = Config {
        max_per_ip: 1,
        ..web_config()
    };
    let (server, web) = start_web(config);
    let ws = WsClient::connect(web);
    assert_eq!(
        Client::connect_raw(server.local_addr()).expect_bye(),
        "too many connections from your address"
    );
    let second = TcpStream::connect(web).unwrap();
    let refused = tungstenite::client(format!("ws://{web}/ws"), second);
    assert!(
        matches!(
            &refused,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)))
                if r.status() == 429
        ),
        "{refused:?}"
    );
    assert_eq!(post(web, "/session", "").status, 429);
    assert_eq!(get(web, "/").status, 200);

    drop(ws);
    common::eventually("the WebSocket user's place is free again", || {
        let mut next = Client::connect_raw(server.local_addr());
        next.line().starts_with("HELLO ")
    });
    server.shutdown();
    server.join();
}

/// A page of another site cannot open a WebSocket here for its visitors.
#[test]
fn cross_origin_websockets_are_refused() {
    let (server, web) = start_web(web_config());
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {web}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: http://evil.example\r\n\r\n"
    );
    assert_eq!(exchange(web, request.as_bytes()).status, 403);
    server.shutdown();
    server.join();
}

/// Creates a polling session; returns its token.
fn new_session(web: std::net::SocketAddr) -> String {
    let created = post(web, "/session", "");
    assert_eq!(created.status, 201, "{}", created.body);
    created.body.trim().to_string()
}

/// One poll: the lines and the next cursor.
fn poll(web: std::net::SocketAddr, token: &str, since: u64, wait: u64) -> (Vec<String>, u64, bool) {
    let reply = get(
        web,
        &format!("/session/{token}/poll?since={since}&wait={wait}"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let next = reply.header("x-next").unwrap().parse().unwrap();
    let ended = reply.header("x-ended") == Some("1");
    (
        reply.body.lines().map(str::to_string).collect(),
        next,
        ended,
    )
}

/// A polling session is a user like any other: others see it join and chat; it sends
/// lines, and fetches lines at once (short poll) or waiting for them (long poll).
#[test]
fn polling_sessions_chat_with_tcp_users() {
    let (server, web) = start_web(web_config());
    let mut tcp = Client::named(server.local_addr(), "tcpuser");
    let token = new_session(web);
    assert_eq!(token.len(), 32);
    // A long poll for the first lines: the dispatcher may not have greeted the session
    // yet when `POST /session` is answered.
    let (lines, next, ended) = poll(web, &token, 0, 10);
    let nick = lines[0]
        .strip_prefix("HELLO ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(lines[1], format!("JOIN lobby {nick}"));
    assert!(!ended);
    tcp.expect(&format!("JOIN lobby {nick}"));

    // Short poll: nothing new, answered at once.
    let (nothing, same, _) = poll(web, &token, next, 0);
    assert!(nothing.is_empty());
    assert_eq!(same, next);

    assert_eq!(
        post(web, &format!("/session/{token}/send"), "hi from http\r\n").status,
        204
    );
    tcp.expect(&format!("MSG lobby {nick} hi from http"));

    // Long poll: waits until the TCP user speaks.
    let waiting = {
        let token = token.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut since = next;
            while !seen.iter().any(|l: &String| l.contains("hi from tcp")) {
                let (lines, next, _) = poll(web, &token, since, 10);
                seen.extend(lines);
                since = next;
            }
            seen
        })
    };
    tcp.send("hi from tcp");
    let seen = waiting.join().unwrap();
    assert!(
        seen.contains(&"MSG lobby tcpuser hi from tcp".to_string()),
        "{seen:?}"
    );

    assert_eq!(
        post(web, &format!("/session/{token}/send"), "/quit").status,
        204
    );
    tcp.expect(&format!("LEAVE lobby {nick} quit"));
    server.shutdown();
    server.join();
}

/// A session that sends nothing for the idle timeout ends with `BYE idle`, which its
/// last poll gets (marked `X-Ended`); then the token is gone.
#[test]
fn idle_polling_sessions_expire() {
    let config = Config {
        idle_timeout: Duration::from_millis(400),
        ..web_config()
    };
    let (server, web) = start_web(config);
    let token = new_session(web);
    let mut since = 0;
    let mut all = Vec::new();
    loop {
        let (lines, next, ended) = poll(web, &token, since, 5);
        all.extend(lines);
        since = next;
        if ended {
            break;
        }
    }
    assert_eq!(all.last().map(String::as_str), Some("BYE idle"));
    assert_eq!(get(web, &format!("/session/{token}/poll")).status, 404);
    server.shutdown();
    server.join();
}

/// Lines sent by polling follow the TCP limits: `413` over `--max-line`, `429` over the
/// flood limit; sessions per address are capped (`429`).
#[test]
fn polling_limits() {
    let config = Config {
        max_line: 32,
        max_per_ip: 2,
        ..tight_flood_limit()
    };
    let (server, web) = start_web(config);
    let token = new_session(web);
    let send = format!("/session/{token}/send");
    assert_eq!(post(web, &send, &"x".repeat(33)).status, 413);
    let statuses: Vec<u16> = (0..4)
        .map(|i| post(web, &send, &format!("line {i}")).status)
        .collect();
    assert_eq!(&statuses[..2], &[204, 204]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let _second = new_session(web);
    assert_eq!(post(web, "/session", "").status, 429);
    server.shutdown();
    server.join();
}

/// Waits until an observer hears `nick` leave `room` for `reason`.
fn expect_left(events: &crossbeam_channel::Receiver<ChatEvent>, nick: &str, reason: &str) {
    let left = ChatEvent::Left {
        nick: nick.to_string(),
        room: "lobby".into(),
        reason: reason.to_string(),
    };
    while events
        .recv_timeout(PATIENCE)
        .expect("the room hears the leave")
        != left
    {}
}

/// The nick of a session, from its first poll (a long one: the `HELLO` is written by
/// the dispatcher, which may not have taken the new session yet).
fn session_nick(web: std::net::SocketAddr, token: &str) -> String {
    let (lines, _, _) = poll(web, token, 0, 10);
    lines[0]
        .strip_prefix("HELLO ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

/// A polling client that stops making requests is gone after `session_gone`: the room
/// sees it leave as `connection closed`, as a TCP client that vanished.
#[test]
fn polling_sessions_without_requests_are_gone() {
    let mut config = web_config();
    config.web.as_mut().unwrap().session_gone = Duration::from_millis(300);
    let (server, web) = start_web(config);
    let events = server.subscribe();
    let token = new_session(web);
    let nick = session_nick(web, &token);
    expect_left(&events, &nick, "connection closed");
    assert_eq!(get(web, &format!("/session/{token}/poll")).status, 404);
    server.shutdown();
    server.join();
}

/// A polling client that stops fetching while its room is busy fills its buffer
/// (`--max-pending`) and is dropped as `too slow` after `--send-timeout`.
#[test]
fn polling_sessions_that_stop_fetching_are_too_slow() {
    let config = Config {
        max_pending: 4096,
        send_timeout: Duration::from_millis(300),
        ..web_config()
    };
    let (server, web) = start_web(config);
    let events = server.subscribe();
    let token = new_session(web);
    let nick = session_nick(web, &token);
    let mut talker = Client::connect(server.local_addr());
    let line = "z".repeat(500);
    // 20 lines of 500 bytes are more than the 4 KiB buffer holds: the rest waits in the
    // server, and the flusher finds no progress for the send timeout.
    for _ in 0..20 {
        talker.send(&line);
    }
    expect_left(&events, &nick, "too slow");
    server.shutdown();
    server.join();
}

/// A WebSocket client that stops reading is dropped as `too slow`, as a TCP client is:
/// once the kernel's buffers are full, its output waits in the server, and after
/// `--send-timeout` without progress it goes. (Its receive buffer is set small so that
/// it fills after kilobytes rather than megabytes.)
#[test]
fn websocket_clients_that_stop_reading_are_too_slow() {
    let config = Config {
        max_pending: 16 * 1024,
        send_timeout: Duration::from_millis(500),
        ..web_config()
    };
    let (server, web) = start_web(config);
    let events = server.subscribe();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&web.into()).unwrap();
    let stream: TcpStream = socket.into();
    let (mut never_reads, _) = tungstenite::client(format!("ws://{web}/ws"), stream).unwrap();
    let hello = match never_reads.read().unwrap() {
        Message::Text(text) => text.to_string(),
        other => panic!("expected HELLO, got {other:?}"),
    };
    let nick = hello.split(' ').nth(1).unwrap().to_string();

    // A talker sends 1 KB lines, reading its own echo on another thread, until the
    // observer hears the WebSocket client leave (at most 40 MB: far more than the
    // kernel buffers hold).
    let mut talker = TcpStream::connect(server.local_addr()).unwrap();
    let mut echo = talker.try_clone().unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut echo, &mut std::io::sink()));
    let line = format!("{}\n", "w".repeat(1000));
    let gone = ChatEvent::Left {
        nick: nick.clone(),
        room: "lobby".into(),
        reason: "too slow".into(),
    };
    let mut dropped = false;
    for _ in 0..40_000 {
        talker.write_all(line.as_bytes()).unwrap();
        if events.try_iter().any(|event| event == gone) {
            dropped = true;
            break;
        }
    }
    while !dropped {
        match events.recv_timeout(PATIENCE) {
            Ok(event) => dropped = event == gone,
            Err(_) => break,
        }
    }
    assert!(dropped, "{nick} was not dropped as too slow");
    server.shutdown();
    server.join();
    drop(talker);
    let _ = drain.join();
}

/// The web listener exists only when asked for.
#[test]
fn no_web_listener_by_default() {
    let server = common::start_server(test_config());
    assert_eq!(server.web_addr(), None);
    let mut config = test_config();
    config.web = Some(WebConfig::new("127.0.0.1:0"));
    let with_web = common::start_server(config);
    assert!(with_web.web_addr().is_some());
    for server in [server, with_web] {
        server.shutdown();
        server.join();
    }
}

/// The push-versus-poll comparison (`examples/pushpoll.rs`) runs end to end against the
/// real server binary, and every transport it measures delivers messages. (A smoke
/// test: the numbers themselves are for a quiet machine, not for a test.)
#[test]
fn the_push_poll_comparison_runs() {
    let pushpoll = common::example_binary_with("pushpoll", &["web"]);
    let output = std::process::Command::new(pushpoll)
        .args([
            "--users",
            "3",
            "--rate",
            "20",
            "--idle",
            "3",
            "--duration",
            "1",
        ])
        .args(["--only", "tcp,ws,long-ka,short100ms"])
        .args(["--server", env!("CARGO_BIN_EXE_underworld-line")])
        .output()
        .expect("run pushpoll");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for transport in [
        "raw TCP push",
        "WebSocket push",
        "HTTP long polling, keep-alive",
        "HTTP short polling every 100 ms, new connection per request",
    ] {
        let rows: Vec<&str> = stdout
            .lines()
            .filter(|line| line.starts_with(&format!("| {transport} |")))
            .collect();
        assert_eq!(
            rows.len(),
            2,
            "an active and an idle row for {transport}:\n{stdout}"
        );
        // | transport | latency | requests | bytes | CPU | deliveries | failed requests |
        let deliveries: u64 = rows[0].split('|').nth(6).unwrap().trim().parse().unwrap();
        assert!(deliveries > 0, "{transport} delivered nothing:\n{stdout}");
    }
}

/// `--max-clients` is one cap for both listeners (each connection is a thread, and the
/// thread limit is the process's, not a listener's): with a WebSocket user and a TCP
/// user in, a third is refused on either listener; when the WebSocket user leaves, its
/// slot is free again for a TCP user, and when a TCP user leaves, for a web visitor
/// (neither waits for someone to connect to the listener the leaver came from).
#[test]
fn both_listeners_share_one_connection_cap() {
    let config = Config {
        max_clients: Some(2),
        ..web_config()
    };
    let (server, web) = start_web(config);
    let ws = WsClient::connect(web);
    let tcp = Client::connect(server.local_addr());
    assert_eq!(
        Client::connect_raw(server.local_addr()).expect_bye(),
        "server full"
    );
    assert_eq!(get(web, "/").status, 503);

    drop(ws);
    let mut newcomer = None;
    common::eventually("the WebSocket user's slot is free again", || {
        let mut next = Client::connect_raw(server.local_addr());
        let greeted = next.line().starts_with("HELLO ");
        newcomer = greeted.then_some(next);
        greeted
    });
    assert_eq!(get(web, "/").status, 503, "full again");

    drop(tcp);
    common::eventually("the TCP user's slot is free for the web", || {
        get(web, "/").status == 200
    });
    drop(newcomer);
    server.shutdown();
    server.join();
}

/// A WebSocket user far behind (megabytes queued for it while it did not read) gets
/// every line once it reads again, the last one included, with nothing said after it
/// to push it out: no frame waits in the transport unseen by the outbox.
#[test]
fn a_websocket_user_far_behind_gets_every_line_when_it_reads_again() {
    // Neither the WebSocket user (who does not read yet) nor the talker (who reads its
    // own copies only after sending) may be dropped as too slow meanwhile, however long
    // a loaded machine takes to send 27 MB: both limits far out of reach.
    let config = Config {
        max_pending: 64 * 1024 * 1024,
        send_timeout: Duration::from_secs(120),
        ..web_config()
    };
    let (server, web) = start_web(config);
    let mut talker = Client::named(server.local_addr(), "talker");
    let mut ws = WsClient::connect(web);
    talker.expect(&format!("JOIN lobby {}", ws.nick));
    let filler = "x".repeat(900);
    // ~27 MB: more than the kernel buffers on both sides (4 + 6 MiB at most here).
    const LINES: usize = 30_000;
    for i in 0..LINES {
        talker.send(&format!("{i} {filler}"));
    }
    talker.send("LAST");
    // The talker's own copy of LAST: the dispatcher has queued it for everyone.
    talker.expect("MSG lobby talker LAST");

    let mut received = 0;
    loop {
        let line = ws.line();
        if line == "MSG lobby talker LAST" {
            break;
        }
        if line == format!("MSG lobby talker {received} {filler}") {
            received += 1;
        }
    }
    assert_eq!(received, LINES, "every line, in order, before LAST");
    server.shutdown();
    server.join();
}

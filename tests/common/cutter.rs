//! A TCP proxy in front of Redis that can lose one answer: once armed, it passes on the
//! first request that contains a marker, lets Redis run it and answer, then closes that
//! client's connection instead of passing the answer on. The client sees its connection
//! break, not a timeout, and cannot know that Redis ran the command: the case where a
//! retry would run it twice.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

pub struct Cutter {
    /// Where clients connect.
    pub port: u16,
    armed: Arc<AtomicBool>,
}

impl Cutter {
    /// Proxies 127.0.0.1:`upstream` (Redis) on a free port; cuts at `marker` once armed.
    pub fn start(upstream: u16, marker: &'static [u8]) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let trigger = Arc::clone(&armed);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                relay(client, server, Arc::clone(&trigger), marker);
            }
        });
        Cutter { port, armed }
    }

    /// The next request with the marker loses its answer.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

/// Copies both ways between `client` and `server` on two threads.
fn relay(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>, marker: &'static [u8]) {
    // Raised (before the request goes on) when this connection is the one to cut.
    let cut = Arc::new(AtomicBool::new(false));
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let cut_up = Arc::clone(&cut);
    thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buf) {
            let chunk = &buf[..n];
            let has_marker = chunk.windows(marker.len()).any(|w| w == marker);
            if has_marker && armed.swap(false, Ordering::SeqCst) {
                cut_up.store(true, Ordering::SeqCst);
            }
            if to_server.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n @ 1..) = from_server.read(&mut buf) {
            if cut.load(Ordering::SeqCst) {
                // Redis has run the request and answered: the client never hears it.
                break;
            }
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Both);
        let _ = from_server.shutdown(Shutdown::Both);
    });
}

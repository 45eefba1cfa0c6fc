//! The chat page in a real browser: headless Chromium from the OS packages, driven
//! through WebDriver by `chromedriver` (issue 10). The page chats with raw TCP users.
//!
//! Only with `cargo test --features web`. Needs `chromium` and `chromedriver`
//! (Debian: `apt-get install chromium chromium-driver`, which `.ci/run` does); without
//! them the test fails and says so. `CHROMEDRIVER` and `CHROMIUM` override the paths.
//!
//! Why WebDriver, spoken with `ureq` and `serde_json`: it is a W3C standard of a few
//! JSON requests, and `chromedriver` comes with the OS's Chromium, so nothing is ever
//! downloaded. (Crates that drive Chrome through the DevTools protocol, such as
//! `headless_chrome`, fetch a browser build of their own unless told otherwise, and
//! bring a larger dependency tree; `fantoccini` and `thirtyfour` need an async runtime.)
//!
//! The README's screenshot comes from the ignored test at the end:
//! `cargo test --features web --test browser -- --ignored screenshot`.

#![cfg(feature = "web")]

mod common;
mod web_helpers;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{Client, PATIENCE};
use serde_json::{json, Value};
use web_helpers::{start_web, web_config};

/// A `chromedriver` we started, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of `candidates` that exists, or the test fails with what to install.
fn find(env: &str, candidates: &[&str]) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    candidates
        .iter()
        .map(Path::new)
        .find(|path| path.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            panic!(
                "this test needs a real browser: none of {candidates:?} exists. Install \
                 them (Debian: apt-get install chromium chromium-driver; .ci/run does), \
                 or set {env}"
            )
        })
}

/// Starts `chromedriver` on a free port and waits for it to say it is ready.
fn start_driver() -> Driver {
    let binary = find(
        "CHROMEDRIVER",
        &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
    // It prints "ChromeDriver was started successfully on port N." when it listens.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("started successfully") {
        line.clear();
        let read = stdout.read_line(&mut line).unwrap();
        assert!(read > 0, "chromedriver ended before it was ready");
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A WebDriver session: one headless Chromium window.
struct Browser {
    driver: Driver,
    session: String,
}

impl Browser {
    fn open(width: u32, height: u32) -> Browser {
        let driver = start_driver();
        let chromium = find(
            "CHROMIUM",
            &["/usr/lib/chromium/chromium", "/usr/bin/chromium"],
        );
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    // A desktop window is at least 500 px wide; a phone's viewport is
                    // emulated (the layout the page would get on a phone).
                    "mobileEmulation": if width < 500 {
                        json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2 } })
                    } else {
                        json!({})
                    },
                    // No sandbox: CI runs as root, where Chromium's sandbox cannot start.
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--no-first-run",
                             format!("--window-size={width},{height}")]
                }
            }}
        });
        let created = call("POST", &format!("{}/session", driver.url), capabilities);
        let session = created["sessionId"].as_str().unwrap().to_string();
        let browser = Browser { driver, session };
        browser.command(
            "POST",
            "timeouts",
            json!({ "script": PATIENCE.as_millis() as u64 }),
        );
        browser
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.driver.url, self.session);
        call(method, &url, body)
    }

    fn go(&self, url: &str) {
        self.command("POST", "url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) and returns its value.
    fn run(&self, script: &str) -> Value {
        self.command(
            "POST",
            "execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Waits, in the page, until the JS expression `condition` is truthy; returns its
    /// value. The page is re-checked on every change of its DOM (a MutationObserver),
    /// so nothing here guesses how long to sleep.
    fn wait_for(&self, condition: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const test = () => {{ try {{ return ({condition}); }} catch (e) {{ return null; }} }};
             const first = test();
             if (first) {{ done(first); return; }}
             const observer = new MutationObserver(() => {{
                 const value = test();
                 if (value) {{ observer.disconnect(); done(value); }}
             }});
             observer.observe(document, {{ subtree: true, childList: true, characterData: true }});"
        );
        self.command(
            "POST",
            "execute/async",
            json!({ "script": script, "args": [] }),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "element",
            json!({ "using": "css selector", "value": css }),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    /// Types `text` into the element and presses its form's Send button.
    fn type_and_send(&self, text: &str) {
        let input = self.element("#input");
        self.command(
            "POST",
            &format!("element/{input}/value"),
            json!({ "text": text }),
        );
        let send = self.element("#send");
        self.command("POST", &format!("element/{send}/click"), json!({}));
    }

    fn screenshot(&self) -> Vec<u8> {
        let png = self.command("GET", "screenshot", Value::Null);
        decode_base64(png.as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.driver.url, self.session);
        let _ = ureq::delete(&url).call();
    }
}

/// One WebDriver request; returns its `value`.
fn call(method: &str, url: &str, body: Value) -> Value {
    let request = ureq::request(method, url).timeout(PATIENCE * 3);
    let response = if method == "GET" {
        request.call()
    } else {
        request.send_json(body)
    };
    match response {
        Ok(response) => response.into_json::<Value>().unwrap()["value"].take(),
        Err(ureq::Error::Status(code, response)) => {
            panic!(
                "WebDriver {method} {url}: {code} {}",
                response.into_string().unwrap()
            )
        }
        Err(e) => panic!("WebDriver {method} {url}: {e}"),
    }
}

/// Standard base64 (what WebDriver's screenshot returns), decoded.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut bytes = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        bytes.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    bytes
}

fn page_url(web: SocketAddr) -> String {
    format!("http://{web}/")
}

/// The page, in Chromium, chats with a raw TCP client both ways, shows its alias, the
/// room and who is in it, and shows HTML-looking messages as text.
#[test]
fn the_page_chats_with_tcp_users_in_a_real_browser() {
    let (server, web) = start_web(web_config());
    let mut tcp = Client::named(server.local_addr(), "tcpuser");
    let browser = Browser::open(390, 800); // a phone-sized viewport

    browser.go(&page_url(web));
    let nick = browser.wait_for("document.getElementById('me').textContent !== '…' && document.getElementById('me').textContent");
    let nick = nick.as_str().unwrap().to_string();
    tcp.expect(&format!("JOIN lobby {nick}"));
    assert_eq!(
        browser.wait_for("document.getElementById('room').textContent === 'lobby'"),
        json!(true)
    );
    browser.wait_for(
        "[...document.querySelectorAll('#members li')].some(li => li.textContent === 'tcpuser')",
    );
    // Phone-sized: nothing wider than the screen, the input and its button on screen.
    let layout = browser.run(
        "const input = document.getElementById('input').getBoundingClientRect(); \
         const send = document.getElementById('send').getBoundingClientRect(); \
         return { overflow: document.documentElement.scrollWidth > window.innerWidth, \
                  visible: input.width > 150 && send.right <= window.innerWidth \
                           && send.bottom <= window.innerHeight, \
                  width: window.innerWidth, \
                  phone_layout: getComputedStyle(document.querySelector('main')).flexDirection };",
    );
    assert_eq!(
        layout,
        json!({ "overflow": false, "visible": true, "width": 390, "phone_layout": "column-reverse" })
    );

    browser.type_and_send("hello from chromium");
    tcp.expect(&format!("MSG lobby {nick} hello from chromium"));

    tcp.send("hello browser");
    browser.wait_for("document.getElementById('log').textContent.includes('hello browser')");

    let html = "<img src=x onerror=alert(1)><script>document.title='pwned'</script><b>bold</b>";
    tcp.send(html);
    let shown = browser.wait_for(&format!(
        "[...document.querySelectorAll('#log li')].map(li => li.textContent).find(t => t.includes({}))",
        serde_json::to_string(html).unwrap()
    ));
    assert!(shown.as_str().unwrap().ends_with(html), "{shown}");
    let injected = browser.run(
        "return { imgs: document.querySelectorAll('#log img, #log script, #log b').length, \
                  title: document.title };",
    );
    assert_eq!(injected, json!({ "imgs": 0, "title": "Underworld-Line" }));

    // The user leaves: the TCP client sees it.
    browser.type_and_send("/quit bye from the browser");
    tcp.expect(&format!("LEAVE lobby {nick} quit: bye from the browser"));
    browser.wait_for("document.getElementById('status').textContent.includes('you left')");
    server.shutdown();
    server.join();
}

/// When the server goes away the page says so and counts down to its next attempt.
#[test]
fn the_page_reconnects_with_back_off() {
    let (server, web) = start_web(web_config());
    let browser = Browser::open(800, 600);
    browser.go(&page_url(web));
    browser.wait_for("document.getElementById('status').textContent === 'connected'");
    server.shutdown();
    let status = browser.wait_for(
        "document.getElementById('status').textContent.includes('reconnecting in') && \
         document.getElementById('status').textContent",
    );
    assert!(
        status.as_str().unwrap().contains("server shutting down"),
        "{status}"
    );
    server.join();
}

/// A user the operator kicks is not brought back by the page: it says so and waits
/// for a reload (coming straight back would undo the kick).
#[test]
fn a_kicked_page_does_not_come_back_by_itself() {
    let (server, web) = start_web(web_config());
    let browser = Browser::open(800, 600);
    browser.go(&page_url(web));
    let nick = browser.wait_for(
        "document.getElementById('status').textContent === 'connected' && \
         document.getElementById('me').textContent",
    );
    server
        .kick(nick.as_str().unwrap(), "spam")
        .expect("the page's user is online");
    let status = browser.wait_for(
        "document.getElementById('status').textContent.includes('reload the page') && \
         document.getElementById('status').textContent",
    );
    assert!(status.as_str().unwrap().contains("kicked"), "{status}");
    assert!(
        !status.as_str().unwrap().contains("reconnecting"),
        "{status}"
    );
    server.shutdown();
    server.join();
}

/// Regenerates the README's screenshot (`src/web/screenshot.png`):
/// `cargo test --features web --test browser -- --ignored screenshot`.
#[test]
#[ignore = "writes src/web/screenshot.png; run on purpose"]
fn screenshot() {
    let (server, web) = start_web(web_config());
    let addr = server.local_addr();
    let mut ada = Client::named(addr, "ada");
    let mut bo = Client::named(addr, "bo");
    let browser = Browser::open(900, 560);
    browser.go(&page_url(web));
    let nick = browser.wait_for("document.getElementById('me').textContent !== '…' && document.getElementById('me').textContent");
    let nick = nick.as_str().unwrap().to_string();
    ada.expect(&format!("JOIN lobby {nick}"));
    ada.send("anyone here?");
    bo.expect("MSG lobby ada anyone here?");
    bo.send("/me waves");
    browser.wait_for("document.getElementById('log').textContent.includes('waves')");
    browser.type_and_send("hi both, from a browser");
    ada.expect(&format!("MSG lobby {nick} hi both, from a browser"));
    ada.send("<b>this shows as text</b>");
    browser.wait_for("document.getElementById('log').textContent.includes('shows as text')");
    let started = Instant::now();
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/screenshot.png");
    std::fs::write(&path, png).unwrap();
    println!("wrote {} in {:?}", path.display(), started.elapsed());
    server.shutdown();
    server.join();
}

//! Cluster tests' helpers (feature `redis`): a real `redis-server` of the test's own on a
//! free port, and in-process nodes linked to it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::process::{spawn_server, ServerProcess};
use super::{eventually, start_server, test_config, PATIENCE};
use underworld_line::cluster::ClusterConfig;
use underworld_line::Server;

/// A `redis-server` process of our own, killed when dropped.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts `redis-server` on `port` and waits until it answers.
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the cluster tests need a real Redis. \
                     Install it (Debian/Ubuntu: apt-get install -y redis-server; .ci/run does)"
                )
            });
        let redis = Redis { child, port };
        let start = Instant::now();
        while redis.connect().is_err() {
            assert!(
                start.elapsed() < PATIENCE,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        url(self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A plain client connection, as any program with access to Redis could open.
    pub fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let mut connection =
            redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))?;
        redis::cmd("PING").query::<String>(&mut connection)?;
        Ok(connection)
    }

    /// Kills it (SIGKILL: every connection breaks at once) and waits for it to end.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// A node named `node` of the cluster at `redis_url`.
pub fn start_node(redis_url: &str, node: &str) -> Server {
    start_node_with(redis_url, node, test_config())
}

/// [`start_node`] keeping `alias_pool` aliases reserved ahead.
pub fn start_node_with_pool(redis_url: &str, node: &str, alias_pool: usize) -> Server {
    start_configured(redis_url, node, test_config(), alias_pool)
}

/// [`start_node`] with a config of the test's own.
pub fn start_node_with(redis_url: &str, node: &str, config: underworld_line::Config) -> Server {
    let pool = underworld_line::cluster::registry::ALIAS_POOL;
    start_configured(redis_url, node, config, pool)
}

fn start_configured(
    redis_url: &str,
    node: &str,
    mut config: underworld_line::Config,
    alias_pool: usize,
) -> Server {
    config.cluster = Some(ClusterConfig {
        redis_url: redis_url.to_string(),
        node: node.to_string(),
        alias_pool,
    });
    start_server(config)
}

/// A node of the cluster on `redis`, once it is linked (subscribed to Redis).
pub fn linked_node(redis: &Redis, node: &str) -> Server {
    let server = start_node(&redis.url(), node);
    await_link(&server, true);
    server
}

/// The two nodes most tests need, `node-a` and `node-b`, both linked.
pub fn two_linked_nodes(redis: &Redis) -> (Server, Server) {
    (linked_node(redis, "node-a"), linked_node(redis, "node-b"))
}

pub fn linked(node: &Server) -> bool {
    node.stats().cluster_linked.load(Ordering::Relaxed)
}

pub fn await_link(node: &Server, up: bool) {
    eventually(
        &format!("cluster link {}", if up { "up" } else { "down" }),
        || linked(node) == up,
    );
}

/// The server binary as a node of its own process (so that a test can kill it), with
/// its console on a pipe. Killed when dropped.
pub struct NodeProcess {
    process: ServerProcess,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

impl NodeProcess {
    /// Starts `underworld-line --redis URL --node NAME` on a free port and waits until
    /// its `/stats` says it is linked to Redis.
    pub fn start(redis: &Redis, node: &str) -> NodeProcess {
        NodeProcess::start_with(redis, node, &[])
    }

    /// [`NodeProcess::start`] with more flags.
    pub fn start_with(redis: &Redis, node: &str, more: &[&str]) -> NodeProcess {
        let url = redis.url();
        let mut args = vec![
            "--rate-limit",
            "off",
            "--max-per-ip",
            "0",
            "--redis",
            &url,
            "--node",
            node,
        ];
        args.extend_from_slice(more);
        let process = spawn_server(&args, Stdio::piped());
        let mut node_process = NodeProcess {
            addr: process.addr,
            process,
        };
        let linked = format!("cluster: node {node}, linked to {url}");
        node_process.await_console_line("/stats", &linked);
        node_process
    }

    /// Types `command` on the console, again every 200 ms, until it prints `expected`.
    pub fn await_console_line(&mut self, command: &str, expected: &str) {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < PATIENCE,
                "{command} never printed {expected:?}"
            );
            self.type_line(command);
            while let Ok(line) = self.process.stdout.recv_timeout(Duration::from_millis(200)) {
                if line == expected {
                    return;
                }
            }
        }
    }

    /// Waits for a line of the node's log (stderr) that contains `fragment`, skipping
    /// the lines before it.
    pub fn await_log(&self, fragment: &str) {
        let start = Instant::now();
        let mut skipped = std::collections::VecDeque::new();
        loop {
            let left = PATIENCE.saturating_sub(start.elapsed());
            match self.process.stderr.recv_timeout(left) {
                Ok(line) if line.contains(fragment) => return,
                Ok(line) => {
                    // The last few, for the failure message.
                    if skipped.len() == 20 {
                        skipped.pop_front();
                    }
                    skipped.push_back(line);
                }
                Err(_) => panic!("the log never said {fragment:?}; it said {skipped:?}"),
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process: `STOP` freezes it whole, its
    /// connections stay open, as a node starved or paused would.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.process.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Types one line on the node's console.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        let console = self.process.console.as_mut().expect("stdin is a pipe");
        writeln!(console, "{line}").unwrap();
    }

    /// Waits (at most `PATIENCE`) for the process to exit; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.process.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < PATIENCE, "the node did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to Redis or anyone.
    pub fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // A test that failed while the node was stopped: wake it, then kill it.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.process.child.id().to_string())
            .status();
        self.kill();
    }
}

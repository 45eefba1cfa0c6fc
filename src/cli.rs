//! Command-line flags of the `underworld-line` binary, parsed with std only.

use std::time::Duration;

use crate::config::Config;
use crate::rate::RateLimit;

/// The default listening address: the port of the Node.js predecessor.
pub const DEFAULT_ADDR: &str = "127.0.0.1:2022";

/// The cluster flags in `--help`: only in a build with the `redis` feature.
#[cfg(feature = "redis")]
macro_rules! cluster_usage {
    () => {
        "  --redis URL                cluster mode: share rooms with the other nodes that
                             use this Redis (redis://HOST:PORT, redis://:PASS@HOST:PORT/DB)
  --node NAME                this node's name in the cluster, unique; letters,
                             digits, '_', '-' [random: node-xxxxxxxx]
"
    };
}
#[cfg(not(feature = "redis"))]
macro_rules! cluster_usage {
    () => {
        ""
    };
}

/// The web flag in `--help`: only in a build with the `web` feature.
#[cfg(feature = "web")]
macro_rules! web_usage {
    () => {
        "  --web-addr HOST:PORT       also serve the chat page, WebSocket and HTTP polling
                             on this address (e.g. 127.0.0.1:8080) [off]
"
    };
}
#[cfg(not(feature = "web"))]
macro_rules! web_usage {
    () => {
        ""
    };
}

/// The text of `--help`.
pub const USAGE: &str = concat!(
    "\
underworld-line: an anonymous real-time chat server over raw TCP

usage: underworld-line [OPTIONS]

options (defaults in brackets):
  --addr HOST:PORT           where to listen [127.0.0.1:2022]
  --max-clients N|auto       most concurrent connections [auto: derived from the
                             open-file, memory-map and thread limits of this machine]
  --max-per-ip N             most concurrent connections per IPv4 address or IPv6
                             /64, 0 = unlimited [16]
  --history N                messages each room replays to joiners [20]
  --max-line BYTES           longest line; longer ones get ERR line-too-long [1024]
  --max-unterminated BYTES   bytes without a newline before BYE line too long [65536]
  --rate-limit BURST/PER_SEC|off
                             flood limit per client [10/2]
  --max-pending BYTES        output queued for a client that does not read (in the
                             server, or unread in the kernel's send queue for the
                             send timeout) before it is dropped as too slow [65536]
  --send-timeout SECS        a socket that accepts nothing this long is too slow [2]
  --idle-timeout SECS        no complete line this long: BYE idle [600]
  --announce-max N           rooms bigger than this do not announce JOIN/LEAVE/NICK
                             to everyone [200]
",
    cluster_usage!(),
    web_usage!(),
    "\
  -h, --help                 this text
  -V, --version              the version

Logging: RUST_LOG=debug|info|warn|error [info]. Lines typed on stdin are operator
commands (/help lists them); any other line is pushed to every user as a NOTICE.
"
);

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
// Built once at start-up, so the size of `Run` (a whole `Config`, larger with the
// cluster settings) costs nothing worth a `Box` in the API.
#[allow(clippy::large_enum_variant)]
pub enum Invocation {
    /// Run the server.
    Run {
        /// Where to listen.
        addr: String,
        /// Everything else.
        config: Config,
    },
    /// Print [`USAGE`] and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// Parses the arguments after the program name. `--flag value` and `--flag=value` both
/// work. The error says which flag was wrong and why.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Invocation, String> {
    let mut addr = DEFAULT_ADDR.to_string();
    let mut config = Config::default();
    #[cfg(feature = "redis")]
    let mut node: Option<String> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            _ => {}
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--addr" => addr = value()?,
            "--max-clients" => {
                let v = value()?;
                config.max_clients = if v == "auto" {
                    None
                } else {
                    Some(max_clients(&v)?)
                };
            }
            "--max-per-ip" => config.max_per_ip = number(&flag, &value()?)?,
            "--history" => config.history = number(&flag, &value()?)?,
            "--max-line" => config.max_line = positive(&flag, &value()?)?,
            "--max-unterminated" => config.max_unterminated = positive(&flag, &value()?)?,
            "--rate-limit" => {
                config.rate_limit =
                    RateLimit::parse(&value()?).map_err(|e| format!("{flag}: {e}"))?
            }
            "--max-pending" => config.max_pending = positive(&flag, &value()?)?,
            "--send-timeout" => config.send_timeout = seconds(&flag, &value()?)?,
            "--idle-timeout" => config.idle_timeout = seconds(&flag, &value()?)?,
            "--announce-max" => config.announce_max = number(&flag, &value()?)?,
            #[cfg(feature = "redis")]
            "--redis" => {
                let url = value()?;
                crate::cluster::ClusterConfig::check_url(&url)
                    .map_err(|e| format!("{flag}: {e}"))?;
                config.cluster = Some(crate::cluster::ClusterConfig::new(&url));
            }
            #[cfg(feature = "redis")]
            "--node" => {
                let name = value()?;
                crate::cluster::wire::validate_node_name(&name)
                    .map_err(|e| format!("{flag}: {e}"))?;
                node = Some(name);
            }
            #[cfg(feature = "web")]
            "--web-addr" => {
                let addr = value()?;
                if std::net::ToSocketAddrs::to_socket_addrs(&addr).is_err() {
                    return Err(format!("{flag}: expected HOST:PORT, got {addr:?}"));
                }
                config.web = Some(crate::web::WebConfig::new(&addr));
            }
            _ => return Err(format!("unknown option {arg}; --help lists them")),
        }
    }
    #[cfg(feature = "redis")]
    if let Some(name) = node {
        match config.cluster.as_mut() {
            Some(cluster) => cluster.node = name,
            None => return Err("--node needs --redis URL".to_string()),
        }
    }
    if config.max_unterminated < config.max_line {
        return Err("--max-unterminated must be at least --max-line".to_string());
    }
    Ok(Invocation::Run { addr, config })
}

fn number(flag: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: expected a whole number, got {value:?}"))
}

/// A cap of 0 would start a server that refuses everyone: refused here, with the why.
fn max_clients(value: &str) -> Result<usize, String> {
    match number("--max-clients", value)? {
        0 => Err("--max-clients 0 would refuse every connection; \
                  give a number above 0, or auto"
            .to_string()),
        n => Ok(n),
    }
}

fn positive(flag: &str, value: &str) -> Result<usize, String> {
    match number(flag, value)? {
        0 => Err(format!("{flag} must be above 0")),
        n => Ok(n),
    }
}

fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!(
            "{flag}: expected a number of seconds above 0, got {value:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let Invocation::Run { addr, config } = parse(&[]).unwrap() else {
            panic!()
        };
        assert_eq!(addr, DEFAULT_ADDR);
        assert_eq!(config, Config::default());

        let args = [
            "--addr",
            "0.0.0.0:4000",
            "--max-clients=50",
            "--max-per-ip",
            "0",
            "--history",
            "5",
            "--max-line",
            "512",
            "--rate-limit",
            "off",
            "--idle-timeout",
            "0.5",
            "--max-pending",
            "4096",
        ];
        let Invocation::Run { addr, config } = parse(&args).unwrap() else {
            panic!()
        };
        assert_eq!(addr, "0.0.0.0:4000");
        assert_eq!(config.max_clients, Some(50));
        assert_eq!(config.max_per_ip, 0);
        assert_eq!(config.history, 5);
        assert_eq!(config.max_line, 512);
        assert_eq!(config.rate_limit, None);
        assert_eq!(config.idle_timeout, Duration::from_millis(500));
        assert_eq!(config.max_pending, 4096);
        assert_eq!(parse(&["--help"]), Ok(Invocation::Help));
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(parse(&["--bogus"]).unwrap_err().contains("unknown option"));
        assert!(parse(&["--history"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--max-line", "0"]).unwrap_err().contains("above 0"));
        let no_clients = parse(&["--max-clients", "0"]).unwrap_err();
        assert!(
            no_clients.contains("would refuse every connection"),
            "{no_clients}"
        );
        assert!(parse(&["--idle-timeout", "-1"]).is_err());
        assert!(parse(&["--rate-limit", "fast"]).is_err());
    }
}

#[cfg(all(test, feature = "redis"))]
mod cluster_flags {
    use super::*;

    fn cluster(args: &[&str]) -> Result<Option<crate::cluster::ClusterConfig>, String> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Invocation::Run { config, .. } => Ok(config.cluster),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redis_and_node() {
        assert_eq!(cluster(&[]), Ok(None));
        let random = cluster(&["--redis", "redis://127.0.0.1:6379"])
            .unwrap()
            .unwrap();
        assert_eq!(random.redis_url, "redis://127.0.0.1:6379");
        assert!(random.node.starts_with("node-"), "{}", random.node);
        let named = cluster(&["--node=east-1", "--redis", "redis://:pw@h:1/2"])
            .unwrap()
            .unwrap();
        assert_eq!(named.node, "east-1");
        assert_eq!(named.broker(), "redis://h:1/2");
        assert!(!format!("{named:?}").contains("pw"));
        assert!(cluster(&["--node", "a"])
            .unwrap_err()
            .contains("needs --redis"));
        let not_a_url = cluster(&["--redis", "127.0.0.1:6379"]).unwrap_err();
        assert!(not_a_url.contains("not a Redis URL"), "{not_a_url}");
        assert!(cluster(&["--redis", "redis://h:1", "--node", "a b"]).is_err());
        assert!(USAGE.contains("--redis URL"));
    }
}

#[cfg(all(test, feature = "web"))]
mod web_flags {
    use super::*;

    fn web(args: &[&str]) -> Result<Option<crate::web::WebConfig>, String> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Invocation::Run { config, .. } => Ok(config.web),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn web_addr() {
        assert_eq!(web(&[]), Ok(None));
        let on = web(&["--web-addr", "127.0.0.1:8080"]).unwrap().unwrap();
        assert_eq!(on.addr, "127.0.0.1:8080");
        assert!(web(&["--web-addr=nonsense"])
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!(USAGE.contains("--web-addr HOST:PORT"));
    }
}

//! The `underworld-line` server binary: flags, logging, signals and the operator
//! console around the library's [`Server`].
//!
//! ```sh
//! cargo run --release                       # listens on 127.0.0.1:2022
//! cargo run --release -- --help             # every flag and its default
//! RUST_LOG=debug cargo run --release        # more logging
//! ```

mod log_writer;

use std::io::{self, BufRead, IsTerminal};
use std::process::ExitCode;
use std::thread;

use underworld_line::cli::{parse_args, Invocation, USAGE};
use underworld_line::console::execute;
use underworld_line::Server;

use log_writer::LogFlusher;

fn main() -> ExitCode {
    // Only the binary sets up logging and signal handling: a library must leave both
    // to the program that embeds it (ctrlc allows a single handler per process).
    let log = start_logging();
    let status = run();
    // Whichever way `run` ended, the lines it logged reach stderr before the exit.
    if let Some(log) = log {
        log.flush();
    }
    status
}

/// The server's life: flags, listening, the console, until the server has stopped.
fn run() -> ExitCode {
    let (addr, config) = match parse_args(std::env::args().skip(1)) {
        Ok(Invocation::Run { addr, config }) => (addr, config),
        Ok(Invocation::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("underworld-line {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("underworld-line: {message}");
            return ExitCode::from(2);
        }
    };

    let server = match Server::bind(&addr, config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("underworld-line: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "Underworld-Line on {} (type /help for operator commands, Ctrl-C to stop)",
        server.local_addr()
    );
    #[cfg(feature = "web")]
    if let Some(web) = server.web_addr() {
        eprintln!("The chat in a browser: http://{web}/");
    }

    // Ctrl-C and SIGTERM: the handler runs on ctrlc's own thread and only starts the
    // shutdown; `main` below waits for it to finish.
    let on_signal = server.clone();
    if let Err(e) = ctrlc::set_handler(move || on_signal.shutdown()) {
        log::warn!("no Ctrl-C handler: {e}");
    }

    // The console thread blocks reading stdin, which nothing can interrupt, so it is
    // not joined: when the server has stopped, `main` returns and the process ends it.
    // EOF on stdin (e.g. `</dev/null`) ends only the console, never the server.
    let console_server = server.clone();
    let console = thread::Builder::new()
        .name("console".into())
        .spawn(move || run_console(&console_server));
    if let Err(e) = console {
        log::warn!("no operator console: {e}");
    }

    server.join();
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// Colours on stderr as the usual conventions say: never with `NO_COLOR`, always with
/// `CLICOLOR_FORCE`, otherwise on a terminal that is not `TERM=dumb`.
fn colours_for_stderr() -> env_logger::WriteStyle {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    let dumb = std::env::var("TERM").is_ok_and(|term| term == "dumb");
    if set("NO_COLOR") {
        env_logger::WriteStyle::Never
    } else if set("CLICOLOR_FORCE") || (io::stderr().is_terminal() && !dumb) {
        env_logger::WriteStyle::Always
    } else {
        env_logger::WriteStyle::Never
    }
}

/// `env_logger` (level `info` unless `RUST_LOG` says otherwise), writing through the
/// `log` thread so that no server thread waits for stderr (see `log_writer.rs`).
fn start_logging() -> Option<LogFlusher> {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.format_timestamp_millis();
    let queued = log_writer::start();
    let flusher = queued.map(|(writer, flusher)| {
        // Colours are decided by the target, and a pipe has none: decide here what
        // env_logger decides for stderr (unless RUST_LOG_STYLE says always or never).
        let style = std::env::var("RUST_LOG_STYLE").unwrap_or_default();
        if style.is_empty() || style == "auto" {
            builder.write_style(colours_for_stderr());
        }
        builder.target(env_logger::Target::Pipe(Box::new(writer)));
        flusher
    });
    builder.init();
    flusher
}

fn run_console(server: &Server) {
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = execute(server, &line);
        if !reply.output.is_empty() {
            println!("{}", reply.output);
        }
        if reply.shutdown {
            server.shutdown();
            break;
        }
    }
    log::debug!("console: stdin closed");
}

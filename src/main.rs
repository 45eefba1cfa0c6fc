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

/// `env_logger` (level `info` unless `RUST_LOG` says otherwise), writing through the
/// `log` thread so that no server thread waits for stderr (see `log_writer.rs`).
fn start_logging() -> Option<LogFlusher> {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.format_timestamp_millis();
    let queued = log_writer::start();
    let flusher = queued.map(|(writer, flusher)| {
        // Colours are decided by the target, and a pipe has none: say when stderr is
        // a terminal (unless RUST_LOG_STYLE already says).
        if std::env::var_os("RUST_LOG_STYLE").is_none() && io::stderr().is_terminal() {
            builder.write_style(env_logger::WriteStyle::Always);
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

//! The dispatcher with no sockets at all: two simulated clients, driven by hand.
//!
//! ```sh
//! cargo run --example headless
//! ```
//!
//! It prints a transcript: each line a simulated client "types", then every line the
//! server sends because of it, to each client.
//!
//! # Why this works
//!
//! The [`Dispatcher`] only ever sees [`Event`]s, never sockets: a real server's
//! connection threads turn bytes into events, and the dispatcher writes its answers to
//! each client's [`Transport`](underworld_line::transport::Transport). Here this program
//! plays the connection threads itself: it parses lines with the server's own
//! [`parse_line`] and sends the events; each client's transport is a [`ChannelTransport`],
//! so its output arrives as lines on a channel instead of bytes on a socket.
//!
//! This is how to test chat logic without a network, or to put the chat behind a
//! different transport (a WebSocket gateway, a message bus...).
//!
//! # Keeping the transcript in order
//!
//! The dispatcher runs on its own thread, so its output arrives whenever it is ready.
//! To print each step's output under that step, the program ends every step with a
//! `/ping` from each client and prints what arrives before the `PONG`: the dispatcher
//! handles events in the order they were sent, so by the time a client's `PONG` comes,
//! everything the step caused for that client has come before it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use underworld_line::command::parse_line;
use underworld_line::transport::ChannelTransport;
use underworld_line::{ClientId, Command, Config, Dispatcher, Event};

/// Lines a simulated client can have waiting before its transport reports "full" (what a
/// TCP client that stopped reading would look like). Far more than this program needs.
const CLIENT_BUFFER: usize = 1024;

/// How long to wait for any one line before giving up: the dispatcher answers in
/// microseconds, so only a bug would make it take this long.
const PATIENCE: Duration = Duration::from_secs(5);

/// One simulated client: its id, a name for the transcript, and its incoming lines.
struct SimClient {
    id: ClientId,
    label: &'static str,
    lines: Receiver<String>,
    pings: u64,
}

const USAGE: &str = "\
usage: headless [-h | --help]

Runs two simulated clients through the dispatcher, with no sockets, and prints the
transcript: each line a client types, then every line the server sends because of it.
It takes no options.";

fn main() -> ExitCode {
    // No options, but `--help` answers, and anything else is a mistake worth saying.
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("headless: unexpected argument {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("headless: {problem}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let dispatcher = Dispatcher::start(Config::default()).map_err(|e| e.to_string())?;
    let events = dispatcher.sender();

    println!("== two clients connect");
    let mut alice = connect(&events, ClientId(1), "alice")?;
    let mut bob = connect(&events, ClientId(2), "bob")?;
    // Alice's JOIN lobby for Bob arrived before Bob connected, so he does not get it;
    // Bob's arrival reaches both.
    settle(&events, &mut [&mut alice, &mut bob])?;

    let script: &[(usize, &str)] = &[
        (0, "/nick Alice"),
        (1, "/nick Bob"),
        (0, "hello, anyone here?"),
        (1, "/me waves"),
        (1, "/w Alice psst, over here"),
        (0, "/nick bob"),
        (0, "/dance"),
        (0, "/join cellar"),
        (1, "/rooms"),
    ];
    for &(who, line) in script {
        let typist = if who == 0 { &alice } else { &bob };
        println!("\n== {} types: {line}", typist.label);
        type_line(&events, typist.id, line)?;
        settle(&events, &mut [&mut alice, &mut bob])?;
    }

    println!("\n== who is where (Dispatcher::snapshot)");
    for user in dispatcher.snapshot().users {
        println!("   {} in {}", user.nick, user.room);
    }

    println!("\n== the program shuts the dispatcher down");
    dispatcher.shutdown();
    for client in [&alice, &bob] {
        // After BYE the transport is finished: the channel disconnects.
        while let Some(line) = next_line(client)? {
            println!("   {:<6}<- {line}", client.label);
        }
        // What a connection thread does when its socket closes: the last event for
        // this id. The dispatcher stops once every client it knows has closed.
        send(&events, Event::Closed { id: client.id })?;
    }
    dispatcher.join();
    println!("\n== the dispatcher has stopped");
    Ok(())
}

/// A new client: what a connection thread sends when the acceptor hands it a socket.
fn connect(events: &Sender<Event>, id: ClientId, label: &'static str) -> Result<SimClient, String> {
    let (transport, lines) = ChannelTransport::new(CLIENT_BUFFER);
    println!("   {label} connects as {id}");
    send(
        events,
        Event::Connected {
            id,
            transport: Arc::new(transport),
        },
    )?;
    Ok(SimClient {
        id,
        label,
        lines,
        pings: 0,
    })
}

/// One line typed by a client, handled as a connection thread would: parsed with the
/// server's own parser; a line that does not parse becomes `Rejected`, which the
/// dispatcher answers with `ERR` (so every line a client gets comes from one thread).
fn type_line(events: &Sender<Event>, id: ClientId, line: &str) -> Result<(), String> {
    match parse_line(line) {
        Ok(Some(command)) => send(events, Event::Command { id, command }),
        Ok(None) => Ok(()), // a blank line: nothing to do
        Err(error) => send(
            events,
            Event::Rejected {
                id,
                code: error.code,
                text: error.text,
            },
        ),
    }
}

/// Prints everything each client has received so far (see the module documentation).
fn settle(events: &Sender<Event>, clients: &mut [&mut SimClient]) -> Result<(), String> {
    for client in clients.iter_mut() {
        client.pings += 1;
        let token = format!("step-{}", client.pings);
        let ping = Command::Ping(token.clone());
        send(
            events,
            Event::Command {
                id: client.id,
                command: ping,
            },
        )?;
        let pong = format!("PONG {token}");
        loop {
            let line = next_line(client)?.ok_or("the dispatcher closed the client")?;
            if line == pong {
                break;
            }
            println!("   {:<6}<- {line}", client.label);
        }
    }
    Ok(())
}

/// The client's next line; `None` once its transport is finished.
fn next_line(client: &SimClient) -> Result<Option<String>, String> {
    match client.lines.recv_timeout(PATIENCE) {
        Ok(line) => Ok(Some(line)),
        Err(RecvTimeoutError::Disconnected) => Ok(None),
        Err(RecvTimeoutError::Timeout) => {
            Err(format!("{}: no line for {PATIENCE:?}", client.label))
        }
    }
}

fn send(events: &Sender<Event>, event: Event) -> Result<(), String> {
    events
        .send(event)
        .map_err(|_| "the dispatcher has stopped".to_string())
}

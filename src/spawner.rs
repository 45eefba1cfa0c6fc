//! The spawner thread: creates one reader thread per admitted connection, and joins
//! each one when it ends.
//!
//! It exists so that the acceptor never waits for a thread to be created (see
//! `acceptor.rs`): during a burst of arrivals, sockets queue here (each already greeted
//! by the dispatcher) while threads are started one after another.
//!
//! Joining matters as much as spawning: an exited but unjoined thread still holds its
//! stack mappings, which count against the very limit that caps connections
//! (`vm.max_map_count`, see [`crate::limits`]). So the spawner waits on two channels at
//! once, new connections and finished threads, and joins a thread as soon as it ends.
//! It then tells the acceptor, which frees the connection's slot under the caps.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{select, Receiver, Sender};

use crate::config::Config;
use crate::connection::run_connection;
use crate::event::{ClientId, CloseReason, Event};
use crate::stats::Stats;
use crate::transport::TcpConnection;

/// A connection the acceptor has admitted and the dispatcher has greeted.
pub(crate) struct NewConnection {
    pub(crate) id: ClientId,
    pub(crate) connection: Arc<TcpConnection>,
}

/// The acceptor's handle on the spawner thread.
pub(crate) struct Spawner {
    jobs: Sender<NewConnection>,
    thread: JoinHandle<()>,
}

impl Spawner {
    /// Starts the thread. `ended` hears the id of every connection whose thread has
    /// ended and been joined (or could not be created).
    pub(crate) fn start(
        config: Arc<Config>,
        events: Sender<Event>,
        stats: Arc<Stats>,
        ended: Sender<ClientId>,
    ) -> io::Result<Spawner> {
        // Unbounded, and that is safe: the acceptor admits at most `max_clients`
        // connections, so at most that many can wait here.
        let (jobs, inbox) = crossbeam_channel::unbounded();
        let state = SpawnerState {
            config,
            events,
            stats,
            ended,
            running: HashMap::new(),
        };
        let thread = thread::Builder::new()
            .name("spawner".into())
            .spawn(move || state.run(inbox))?;
        Ok(Spawner { jobs, thread })
    }

    /// Asks for a reader thread for this connection; returns at once.
    pub(crate) fn spawn(&self, connection: NewConnection) {
        // Fails only if the spawner thread is gone (it panicked): the connection's
        // `Arc` is then dropped here, and the dispatcher closes it at shutdown.
        let _ = self.jobs.send(connection);
    }

    /// No more connections will come: starts the threads still queued, then waits for
    /// every connection thread to end (the dispatcher is closing their sockets).
    pub(crate) fn finish(self) {
        drop(self.jobs);
        if self.thread.join().is_err() {
            log::error!("the spawner thread panicked");
        }
    }
}

struct SpawnerState {
    config: Arc<Config>,
    events: Sender<Event>,
    stats: Arc<Stats>,
    ended: Sender<ClientId>,
    running: HashMap<ClientId, JoinHandle<()>>,
}

impl SpawnerState {
    fn run(mut self, inbox: Receiver<NewConnection>) {
        // Each connection thread's last act is to send its id here.
        let (finished_tx, finished) = crossbeam_channel::unbounded::<ClientId>();
        loop {
            select! {
                recv(inbox) -> job => match job {
                    Ok(job) => self.start(job, &finished_tx),
                    Err(_) => break, // the acceptor has stopped
                },
                // Never disconnected: this thread holds a sender itself.
                recv(finished) -> id => {
                    if let Ok(id) = id {
                        self.join(id);
                    }
                }
            }
        }
        log::debug!("spawner: joining {} connection threads", self.running.len());
        for (_, thread) in self.running.drain() {
            let _ = thread.join();
        }
    }

    fn start(&mut self, job: NewConnection, finished: &Sender<ClientId>) {
        let NewConnection { id, connection } = job;
        let events = self.events.clone();
        let config = Arc::clone(&self.config);
        let finished = Finished {
            id,
            to: finished.clone(),
        };
        let spawned = thread::Builder::new()
            .name(format!("conn-{}", id.0))
            .stack_size(self.config.thread_stack)
            .spawn(move || {
                // Dropped last, even if the thread panics: the spawner then joins it
                // and the acceptor frees its slot.
                let _finished = finished;
                run_connection(id, connection, events, config);
            });
        match spawned {
            Ok(thread) => {
                self.running.insert(id, thread);
                // Creating threads is the costly part of a burst of arrivals, and this
                // thread could keep a core busy with it for a while. Giving up the
                // rest of the time slice after each one lets the acceptor (and the
                // dispatcher) run first whenever they are waiting for a core, so the
                // listen queue keeps being drained.
                thread::yield_now();
            }
            Err(e) => {
                // Should not happen below the derived cap; handled all the same. The
                // client was greeted already, so it gets `BYE server full` after its
                // `HELLO`, and its slot is freed.
                log::error!("could not start a thread for {id}: {e}");
                Stats::add(&self.stats.refused, 1);
                let reason = CloseReason::ServerFull;
                let _ = self.events.send(Event::Fatal { id, reason });
                let _ = self.events.send(Event::Closed { id });
                let _ = self.ended.send(id);
            }
        }
    }

    fn join(&mut self, id: ClientId) {
        if let Some(thread) = self.running.remove(&id) {
            let _ = thread.join();
            let _ = self.ended.send(id);
        }
    }
}

/// Tells the spawner, when dropped, that a connection thread is done.
struct Finished {
    id: ClientId,
    to: Sender<ClientId>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.to.send(self.id);
    }
}

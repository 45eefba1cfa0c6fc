//! The spawner thread: creates one reader thread per admitted connection, and joins
//! each one when it ends.
//!
//! It exists so that the acceptor never waits for a thread to be created (see
//! `acceptor.rs`): during a burst of arrivals, sockets queue here (each already greeted
//! by the dispatcher), and their threads are started once the burst has passed (see
//! [`ArrivalClock`] for why it waits).
//!
//! Joining matters as much as spawning: an exited but unjoined thread still holds its
//! stack mappings, which count against the very limit that caps connections
//! (`vm.max_map_count`, see [`crate::limits`]). So the spawner waits on two channels at
//! once, new connections and finished threads, and joins a thread as soon as it ends.
//! It then tells the acceptor, which frees the connection's slot under the caps.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender, TryRecvError};

use crate::config::Config;
use crate::connection::run_connection;
use crate::event::{ClientId, CloseReason, Event};
use crate::limits::{Slots, Sources};
use crate::stats::Stats;
use crate::transport::TcpConnection;

/// How long the acceptor must have been without a new connection before a thread is
/// created (see [`ArrivalClock`]).
const QUIET: Duration = Duration::from_millis(2);

/// The longest a connection waits for its thread during a storm of arrivals. Its
/// `HELLO` went out at once; what waits is the answer to its first line.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// When the acceptor last took a connection, so that the spawner can stand aside
/// while arrivals are coming fast.
///
/// (A steady 500 or more arrivals a second also never leaves the acceptor quiet for
/// [`QUIET`]; threads then come [`MAX_WAIT`] after their connections. At that rate the
/// connection cap is reached within half a minute anyway.)
///
/// # Why thread creation waits for a quiet moment
///
/// On two cores, creating a thread and starting it costs about as much as everything
/// else a new connection needs put together, and each new thread is one more task
/// the scheduler shares the cores with. While thousands arrive at once, that work
/// delays the acceptor by milliseconds at a time, and at 20,000 arrivals a second a
/// few milliseconds fill the 128-long listen queue. So the spawner creates threads
/// only once the acceptor has had nothing to take for [`QUIET`] (or a connection has
/// waited [`MAX_WAIT`]): a storm is drained first, and its threads follow it.
struct ArrivalClock {
    start: Instant,
    /// Microseconds from `start` to the last accepted connection.
    last: AtomicU64,
}

impl ArrivalClock {
    fn new() -> ArrivalClock {
        ArrivalClock {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Called for each connection the acceptor takes.
    fn arrived(&self) {
        let now = self.start.elapsed().as_micros() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// How long since the last arrival.
    fn quiet_for(&self) -> Duration {
        let now = self.start.elapsed().as_micros() as u64;
        Duration::from_micros(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// A connection the acceptor has admitted and the dispatcher has greeted.
pub(crate) struct NewConnection {
    pub(crate) id: ClientId,
    /// Its source address, as `--max-per-ip` counts it.
    pub(crate) source: IpAddr,
    pub(crate) connection: Arc<TcpConnection>,
}

/// The acceptor's handle on the spawner thread.
pub(crate) struct Spawner {
    jobs: Sender<NewConnection>,
    arrivals: Arc<ArrivalClock>,
    thread: JoinHandle<()>,
}

impl Spawner {
    /// Starts the thread. `ended` hears the id of every connection whose thread has
    /// ended and been joined (or could not be created).
    pub(crate) fn start(
        config: Arc<Config>,
        events: Sender<Event>,
        stats: Arc<Stats>,
        slots: Arc<Slots>,
        users: Arc<Sources>,
        ended: Sender<ClientId>,
    ) -> io::Result<Spawner> {
        // Unbounded, and that is safe: the acceptor admits at most `max_clients`
        // connections, so at most that many can wait here.
        let (jobs, inbox) = crossbeam_channel::unbounded();
        let arrivals = Arc::new(ArrivalClock::new());
        let state = SpawnerState {
            config,
            events,
            stats,
            slots,
            users,
            ended,
            running: HashMap::new(),
            arrivals: Arc::clone(&arrivals),
            waiting: VecDeque::new(),
        };
        let thread = thread::Builder::new()
            .name("spawner".into())
            .spawn(move || state.run(inbox))?;
        Ok(Spawner {
            jobs,
            arrivals,
            thread,
        })
    }

    /// The acceptor has just taken a connection (see [`ArrivalClock`]).
    pub(crate) fn arrived(&self) {
        self.arrivals.arrived();
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
    /// The connection cap shared by every listener: a slot is given back as soon as
    /// its thread is joined (not when the acceptor next wakes, which may be long
    /// after, while the web listener is refusing people).
    slots: Arc<Slots>,
    /// `--max-per-ip`, shared the same way: a user's count is given back with its slot.
    users: Arc<Sources>,
    ended: Sender<ClientId>,
    running: HashMap<ClientId, (JoinHandle<()>, IpAddr)>,
    arrivals: Arc<ArrivalClock>,
    /// Connections waiting for a quiet moment, oldest first, with when they came.
    waiting: VecDeque<(Instant, NewConnection)>,
}

impl SpawnerState {
    fn run(mut self, inbox: Receiver<NewConnection>) {
        // Each connection thread's last act is to send its id here.
        let (finished_tx, finished) = crossbeam_channel::unbounded::<ClientId>();
        loop {
            let open = if self.waiting.is_empty() {
                self.wait_for_work(&inbox, &finished)
            } else {
                self.collect_during_storm(&inbox, &finished)
            };
            if !open {
                break; // the acceptor has stopped
            }
            self.start_due(&finished_tx);
        }
        // The acceptor has stopped: no more arrivals to stand aside for.
        while let Some((_, job)) = self.waiting.pop_front() {
            self.start(job, &finished_tx);
        }
        log::debug!("spawner: joining {} connection threads", self.running.len());
        for (_, (thread, _)) in self.running.drain() {
            let _ = thread.join();
        }
    }

    /// Nothing waiting: sleeps until a connection comes or a thread ends. `false` once
    /// the acceptor has stopped.
    fn wait_for_work(
        &mut self,
        inbox: &Receiver<NewConnection>,
        finished: &Receiver<ClientId>,
    ) -> bool {
        select! {
            recv(inbox) -> job => match job {
                Ok(job) => self.waiting.push_back((Instant::now(), job)),
                Err(_) => return false,
            },
            // Never disconnected: this thread holds a sender itself.
            recv(finished) -> id => {
                if let Ok(id) = id {
                    self.join(id);
                }
            }
        }
        true
    }

    /// Connections are waiting for a quiet moment: looks again after [`QUIET`], and
    /// takes what arrived meanwhile all at once. Not waiting on `inbox` here matters:
    /// during a storm the acceptor would otherwise wake this thread for every single
    /// connection, one more task for the scheduler at the worst moment. `false` once
    /// the acceptor has stopped.
    fn collect_during_storm(
        &mut self,
        inbox: &Receiver<NewConnection>,
        finished: &Receiver<ClientId>,
    ) -> bool {
        if let Ok(id) = finished.recv_timeout(QUIET) {
            self.join(id);
        }
        loop {
            match inbox.try_recv() {
                Ok(job) => self.waiting.push_back((Instant::now(), job)),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Starts the waiting connections' threads if the acceptor is quiet, and in any
    /// case those that have waited [`MAX_WAIT`].
    fn start_due(&mut self, finished: &Sender<ClientId>) {
        while let Some((since, _)) = self.waiting.front() {
            if self.arrivals.quiet_for() < QUIET && since.elapsed() < MAX_WAIT {
                return;
            }
            if let Some((_, job)) = self.waiting.pop_front() {
                self.start(job, finished);
            }
        }
    }

    fn start(&mut self, job: NewConnection, finished: &Sender<ClientId>) {
        let NewConnection {
            id,
            source,
            connection,
        } = job;
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
                self.running.insert(id, (thread, source));
                // After a storm this thread starts thousands of threads in a row and
                // could keep a core busy for a second. Giving up the rest of the time
                // slice after each one lets the dispatcher and the new threads (and
                // the acceptor, if a new storm begins) run first whenever they are
                // waiting for a core.
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
                self.slots.give_back();
                self.users.give_back(source);
                let _ = self.ended.send(id);
            }
        }
    }

    fn join(&mut self, id: ClientId) {
        if let Some((thread, source)) = self.running.remove(&id) {
            let _ = thread.join();
            self.slots.give_back();
            self.users.give_back(source);
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

//! The `web-joiner` thread: joins each web connection thread the moment it ends, and
//! gives its slot back under the connection cap.
//!
//! # Why not the acceptor
//!
//! The TCP listener and this one share one cap (`--max-clients`, see
//! [`Slots`](crate::limits::Slots)), because the limit behind it (threads, memory
//! mappings) belongs to the process. The acceptor blocks in `accept` and only wakes
//! when someone connects to *this* listener; if it freed the slots of ended threads,
//! a thousand WebSocket users leaving would keep TCP users out until the next web
//! visitor came. And a slot may only be given back once its thread is joined: an
//! ended but unjoined thread still holds its stack's mappings. So, as the TCP side's
//! spawner does, a thread of its own waits for threads to end and joins them at once.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{select, Receiver, Sender};

use crate::limits::Slots;

/// The acceptor's handle on the joiner thread.
pub(super) struct Joiner {
    handles: Sender<(u64, JoinHandle<()>)>,
    thread: JoinHandle<()>,
}

impl Joiner {
    /// Starts the thread. `finished` hears each connection thread's number as it ends;
    /// `released` tells the acceptor which ones were joined and freed.
    pub(super) fn start(
        finished: Receiver<u64>,
        slots: Arc<Slots>,
        released: Sender<u64>,
    ) -> io::Result<Joiner> {
        let (handles, inbox) = crossbeam_channel::unbounded();
        let thread = thread::Builder::new()
            .name("web-joiner".into())
            .spawn(move || run(&inbox, &finished, &slots, &released))?;
        Ok(Joiner { handles, thread })
    }

    /// Hands over a connection thread to be joined when it ends.
    pub(super) fn watch(&self, number: u64, thread: JoinHandle<()>) {
        let _ = self.handles.send((number, thread));
    }

    /// No more threads will come: joins those still running (the acceptor has told
    /// them to end) and returns.
    pub(super) fn finish(self) {
        drop(self.handles);
        let _ = self.thread.join();
    }
}

fn run(
    inbox: &Receiver<(u64, JoinHandle<()>)>,
    finished: &Receiver<u64>,
    slots: &Slots,
    released: &Sender<u64>,
) {
    let mut running: HashMap<u64, JoinHandle<()>> = HashMap::new();
    // A thread can end before the acceptor has handed over its handle.
    let mut ended_early: HashSet<u64> = HashSet::new();
    let join = |thread: JoinHandle<()>, number: u64| {
        let _ = thread.join();
        slots.give_back();
        let _ = released.send(number);
    };
    loop {
        select! {
            recv(inbox) -> handed => match handed {
                Ok((number, thread)) => {
                    if ended_early.remove(&number) {
                        join(thread, number);
                    } else {
                        running.insert(number, thread);
                    }
                }
                Err(_) => break, // the acceptor has stopped
            },
            recv(finished) -> number => match number {
                Ok(number) => match running.remove(&number) {
                    Some(thread) => join(thread, number),
                    None => {
                        ended_early.insert(number);
                    }
                },
                // Every connection thread and the acceptor are gone: only the
                // handles are left to take.
                Err(_) => {
                    if let Ok((number, thread)) = inbox.recv() {
                        join(thread, number);
                    } else {
                        break;
                    }
                }
            },
        }
    }
    for (number, thread) in running.drain() {
        join(thread, number);
    }
}

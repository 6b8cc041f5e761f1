//! A pool of threads for blocking transfers: each job runs on a thread that waits for
//! the next one afterwards (see [`Workers`]). Used by TFTP for its transfers and by the
//! HTTP node listener for `sendfile`.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One job, run on a pool thread.
pub type Job = Box<dyn FnOnce() + Send>;

/// A pool of threads for blocking transfers (TFTP transfers, HTTP file sends). A
/// thread that finished a job waits for the next one, and a job goes to such a thread.
/// A thread created per request cost a lockstep
/// client (curl, a PXE ROM) twice: the scheduler puts a new thread on the least loaded
/// CPU, where it waits out the running task's slice before it can send the OACK (2 ms,
/// up to 4, on busy CPUs, against 0.2 ms for a woken thread), and where it often stays
/// for the whole transfer, apart from the client, so that every block waits for the
/// other CPU to wake (75 µs a block instead of 17 on a 2-vCPU VM). A woken thread is
/// placed next to the one that woke it, as dnsmasq's single process is. A thread
/// starts only when none is idle; the caller bounds the busy ones (TFTP's session cap,
/// HTTP's connection cap), `max_idle`
/// and `idle_for` the idle ones. Dropped, it ends the idle threads, and each busy one
/// when its transfer ends.
pub struct Workers(Arc<Shared>);

struct Shared {
    name: &'static str,
    stack: usize,
    queue: Mutex<Queue>,
    wake: Condvar,
    max_idle: usize,
    idle_for: Duration,
}

#[derive(Default)]
struct Queue {
    /// Jobs handed to idle threads and not yet taken, one per thread woken for it.
    jobs: VecDeque<Job>,
    /// Idle threads no job is promised to: the threads waiting are `idle` +
    /// `jobs.len()`.
    idle: usize,
    closed: bool,
}

impl Workers {
    /// Threads named `name` with `stack` bytes of stack; at most `max_idle` wait for a
    /// job, each for at most `idle_for`.
    pub fn new(name: &'static str, stack: usize, max_idle: usize, idle_for: Duration) -> Workers {
        Workers(Arc::new(Shared {
            name,
            stack,
            queue: Mutex::default(),
            wake: Condvar::new(),
            max_idle,
            idle_for,
        }))
    }

    /// Runs `job` on an idle thread, or on a new one when none is idle.
    pub fn run(&self, job: Job) -> io::Result<()> {
        let mut q = self.0.queue();
        if q.idle > 0 {
            q.idle -= 1;
            q.jobs.push_back(job);
            drop(q);
            self.0.wake.notify_one();
            return Ok(());
        }
        drop(q);
        let shared = self.0.clone();
        std::thread::Builder::new()
            .name(shared.name.into())
            .stack_size(shared.stack)
            .spawn(move || shared.work(job))
            .map(drop)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.0.queue().closed = true;
        self.0.wake.notify_all();
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pool thread: runs `job`, then each job handed to it, until it has waited
    /// `idle_for` for one, `max_idle` other threads are waiting, or the workers are
    /// dropped.
    fn work(&self, mut job: Job) {
        loop {
            job();
            let mut q = self.queue();
            if q.closed || q.idle + q.jobs.len() >= self.max_idle {
                return;
            }
            q.idle += 1;
            let deadline = Instant::now() + self.idle_for;
            job = loop {
                if let Some(next) = q.jobs.pop_front() {
                    break next;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if q.closed || left.is_zero() {
                    // No job is queued, so none is promised to this thread.
                    q.idle -= 1;
                    return;
                }
                q = self
                    .wake
                    .wait_timeout(q, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until the workers' idle count is `n`.
    fn until_idle(w: &Workers, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.0.queue().idle != n {
            assert!(Instant::now() < deadline, "idle threads never became {n}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_transfer_thread_takes_the_next_request_and_busy_ones_are_not_waited_for() {
        let w = Workers::new("test", 256 * 1024, 4, Duration::from_secs(600));
        let (tx, rx) = std::sync::mpsc::channel();
        let job = |tx: std::sync::mpsc::Sender<_>| -> Job {
            Box::new(move || tx.send(std::thread::current().id()).unwrap())
        };
        w.run(job(tx.clone())).unwrap();
        let first = rx.recv().unwrap();
        until_idle(&w, 1);
        w.run(job(tx.clone())).unwrap();
        assert_eq!(rx.recv().unwrap(), first, "the idle thread took it");
        until_idle(&w, 1);
        // One thread busy: the next request gets a thread of its own.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = tx.clone();
        w.run(Box::new(move || {
            busy.send(std::thread::current().id()).unwrap();
            let _ = held.recv();
        }))
        .unwrap();
        assert_eq!(rx.recv().unwrap(), first);
        w.run(job(tx.clone())).unwrap();
        assert_ne!(rx.recv().unwrap(), first);
        drop(release);
        until_idle(&w, 2);
        drop(w);
    }

    #[test]
    fn idle_transfer_threads_are_capped_and_end() {
        let w = Workers::new("test", 256 * 1024, 1, Duration::from_secs(600));
        let (tx, rx) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        for _ in 0..3 {
            let (tx, held) = (tx.clone(), held.clone());
            w.run(Box::new(move || {
                tx.send(()).unwrap();
                let _ = held.lock().unwrap().recv();
            }))
            .unwrap();
            rx.recv().unwrap();
        }
        drop(release);
        until_idle(&w, 1);
        assert!(w.0.queue().idle <= 1);
        // Waiting for a request ends after `idle_for`, and when the workers are dropped.
        let short = Workers::new("test", 256 * 1024, 4, Duration::from_millis(1));
        short.run(Box::new(|| {})).unwrap();
        until_idle(&short, 0);
        let shared = w.0.clone();
        drop(w);
        let deadline = Instant::now() + Duration::from_secs(20);
        while shared.queue().idle != 0 {
            assert!(
                Instant::now() < deadline,
                "an idle thread outlived the workers"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

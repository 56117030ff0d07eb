//! The data plane's threads: one tokio runtime of one thread per worker, each running the
//! connections handed to it from accept to close — the TLS handshake, every request, and the
//! member connections those requests use (each worker keeps its own idle member connections,
//! see [`current`]). A request therefore never hops between threads, as in HAProxy's threads
//! and nginx's workers. Each listener's accept loop runs on one worker ([`spawn_acceptor`]),
//! which keeps a connection it accepts unless another worker has fewer open
//! ([`run_connection`]).
//!
//! Without [`start`] (library users, unit tests) connections run on the caller's runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The started workers, if any.
static WORKERS: OnceLock<Vec<Worker>> = OnceLock::new();

thread_local! {
    /// The worker this thread belongs to (its runtime thread and that runtime's blocking threads).
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

struct Worker {
    handle: Handle,
    /// Connections running on this worker.
    open: AtomicUsize,
    /// Kept for the life of the process.
    _runtime: tokio::runtime::Runtime,
}

/// Starts `n` worker threads (`lbd-worker-0` …). Only the first call starts any.
///
/// Each worker is a one-thread instance of tokio's multi-thread scheduler rather than a
/// `current_thread` runtime: its LIFO slot runs a task woken by the running one next, while
/// the data it was woken for is still in cache (a member connection's task reading a body
/// chunk, then the client connection's task encrypting it).
pub fn start(n: usize) -> std::io::Result<()> {
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("lbd-worker-{i}"))
            .on_thread_start(move || INDEX.set(Some(i)))
            .enable_all()
            .build()?;
        workers.push(Worker { handle: runtime.handle().clone(), open: AtomicUsize::new(0), _runtime: runtime });
    }
    let _ = WORKERS.set(workers);
    Ok(())
}

/// Number of workers (1 when none were started: the caller's runtime plays that part).
pub fn count() -> usize {
    WORKERS.get().map_or(1, |w| w.len().max(1))
}

/// The worker this thread is (0 off the worker threads).
pub fn current() -> usize {
    INDEX.get().unwrap_or(0)
}

/// Connections open on each worker.
pub fn open_connections() -> Vec<usize> {
    WORKERS.get().map(|w| w.iter().map(|w| w.open.load(Ordering::Relaxed)).collect()).unwrap_or_default()
}

/// Runs `task` (a listener's accept loop) on the next worker in turn, so that listeners'
/// accept loops are spread over the workers (on the caller's runtime when none were started).
pub fn spawn_acceptor<F>(task: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    match WORKERS.get().filter(|w| !w.is_empty()) {
        Some(workers) => workers[NEXT.fetch_add(1, Ordering::Relaxed) % workers.len()].handle.spawn(task),
        None => tokio::spawn(task),
    }
}

/// Runs the connection on `tcp` as the task `start` returns: on this worker (the one that
/// accepted it) unless another has fewer connections open, then on the one with the fewest. A
/// connection accepted by an otherwise idle worker thus costs no cross-thread wake-up. The
/// socket joins the chosen worker's reactor here, and the task is `start`'s future itself, so
/// an idle connection's task holds nothing more; it keeps its place in the worker's count
/// with the [`Assigned`] it is given. Off the workers (none started) it runs on the caller's
/// runtime.
pub fn run_connection<F>(tcp: std::net::TcpStream, start: impl FnOnce(TcpStream, Assigned) -> F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let Some(workers) = WORKERS.get().filter(|w| !w.is_empty()) else {
        tokio::spawn(start(TcpStream::from_std(tcp)?, Assigned(None)));
        return Ok(());
    };
    let here = INDEX.get().and_then(|i| workers.get(i));
    let least = workers.iter().min_by_key(|w| w.open.load(Ordering::Relaxed)).expect("at least one worker");
    let (worker, local) = match here {
        Some(here) if here.open.load(Ordering::Relaxed) <= least.open.load(Ordering::Relaxed) => (here, true),
        _ => (least, false),
    };
    let tcp = {
        let _on = worker.handle.enter();
        TcpStream::from_std(tcp)?
    };
    worker.open.fetch_add(1, Ordering::Relaxed);
    let task = start(tcp, Assigned(Some(&worker.open)));
    if local {
        tokio::spawn(task);
    } else {
        worker.handle.spawn(task);
    }
    Ok(())
}

/// A connection's place in its worker's count of open connections, given up when dropped.
pub struct Assigned(Option<&'static AtomicUsize>);

impl Drop for Assigned {
    fn drop(&mut self) {
        if let Some(open) = self.0 {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

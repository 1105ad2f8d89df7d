//! The supervisor (`--workers N`, N above 1): the process that binds the
//! listeners, loads TLS, forks N workers, forwards signals to them and
//! starts another when one dies. It serves nothing: each worker is exactly
//! the single-process server, built on the listeners it inherits.
//!
//! Its loop is `poll(2)` on the signal self-pipe, with a timeout to its next
//! deadline (a restart due, or the end of the shutdown allowance). SIGCHLD
//! arrives on the same pipe and is answered with `waitpid(WNOHANG)`. Nothing
//! else in it waits, and nothing in it panics: a supervisor that died would
//! leave its workers unsupervised (the kernel then sends them SIGTERM:
//! `sys::end_with_parent`).
//!
//! Fork, not re-exec: a forked worker inherits what the supervisor already
//! has, as it is: the bound listeners, the loaded certificate and key, the
//! status board's shared mapping and the parsed configuration. Re-exec would
//! pass each through the environment or the command line (descriptor
//! numbers, a memfd for the board) and parse them again, and a bad
//! certificate swapped in meanwhile would fail in every worker instead of
//! once up front. What fork asks in return is that the supervisor has one
//! thread when it forks (only the calling thread is copied, and a lock held
//! by another would stay locked forever in the child); it starts none, and
//! checks before each fork.
//!
//! One listening socket shared by every worker, not one `SO_REUSEPORT`
//! socket each: the accept queue belongs to a socket the supervisor and the
//! other workers still hold, so a worker killed with SIGKILL, or stopped,
//! loses nothing that waits in it and delays no one (with `SO_REUSEPORT`,
//! connections hashed to a dead worker's socket are reset unless
//! `net.ipv4.tcp_migrate_req` is set, and wait behind a stopped one). It
//! works unchanged with a socket inherited from systemd, which is one
//! socket. How the load spreads over the workers is `admission.rs`'s accept
//! cap and the README's measurements.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::board::{Board, Seat};
use crate::config::Config;
use crate::listeners::{self, Bound};
use crate::privileges;
use crate::sys;
use crate::systemd::Notifier;
use crate::tls::TlsConfig;

/// The first restart waits this long, so that a worker dying at once does
/// not turn into a fork loop.
pub const BACKOFF_FIRST_MS: u64 = 100;
/// Each restart in a row waits twice as long, up to this.
pub const BACKOFF_MAX_MS: u64 = 5_000;
/// A worker that lived this long died of something new: the next restart
/// waits [`BACKOFF_FIRST_MS`] again.
pub const BACKOFF_RESET_MS: u64 = 10_000;
/// Beyond `--shutdown-timeout`, the time a worker gets to exit after its own
/// deadline (closing what is left) before it is killed.
pub const SHUTDOWN_MARGIN_MS: u64 = 1_000;

/// What this process is to do once `run` returns.
pub enum Role {
    /// The supervisor is done (every worker gone): exit with this code.
    Exit(u8),
    /// This process was just forked: serve as worker `index`.
    Worker(Worker),
}

/// What a worker takes from its supervisor.
pub struct Worker {
    pub index: usize,
    pub listeners: Vec<Bound>,
    pub tls: Option<TlsConfig>,
    pub seat: Seat,
    /// The read end of the worker's own signal pipe.
    pub signals: OwnedFd,
}

/// The restart delay of one worker's place: 100 ms doubling to 5 s, back to
/// 100 ms after a worker that lived 10 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next_ms: BACKOFF_FIRST_MS }
    }
}

impl Backoff {
    /// How long to wait before replacing a worker that lived `lived_ms`.
    pub fn delay(&mut self, lived_ms: u64) -> u64 {
        if lived_ms >= BACKOFF_RESET_MS {
            self.next_ms = BACKOFF_FIRST_MS;
        }
        let delay = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(BACKOFF_MAX_MS);
        delay
    }
}

/// One worker's place: who holds it, since when, and when it is refilled.
#[derive(Default)]
struct Place {
    pid: Option<libc::pid_t>,
    born: u64,
    backoff: Backoff,
    restart_at: Option<u64>,
}

pub struct Supervisor {
    /// Kept open for the workers to come (restarts inherit them); closed
    /// when shutting down, so that the port is released once the workers
    /// close theirs.
    listeners: Vec<Bound>,
    /// Reloaded on SIGHUP beside the workers, so that a worker started
    /// later serves the current pair.
    tls: Option<TlsConfig>,
    board: Board,
    places: Vec<Place>,
    signals: OwnedFd,
    /// `--shutdown-timeout` plus the margin, in milliseconds.
    allowance_ms: u64,
    /// Shutting down: when stragglers are killed.
    stopping: Option<u64>,
    /// sd_notify(3): the supervisor is the main process systemd listens
    /// to (`NotifyAccess=main`), so it, not a worker, says READY, RELOADING
    /// and STOPPING.
    notifier: Notifier,
    killed: bool,
    pid: libc::pid_t,
    epoch: Instant,
}

/// Bind the listeners (or take those socket activation passed:
/// `inherited`), drop to `--user`, say where they listen, and fork
/// `cfg.workers` workers. Returns in the supervisor when every worker is
/// gone after a shutdown, and in each worker right after its fork.
pub fn run(
    cfg: &Config,
    tls: Option<TlsConfig>,
    inherited: Option<Vec<Bound>>,
    notifier: Notifier,
) -> io::Result<Role> {
    // The handlers first: a signal sent as soon as the address is printed
    // must not meet the default action (termination, workers orphaned).
    let signals = sys::signals()?;
    sys::watch_children()?;
    let listeners = match inherited {
        Some(bound) => bound,
        None => listeners::bind_all(cfg)?.0,
    };
    if let Some(user) = &cfg.user {
        // Bound and the TLS key read: the supervisor and every worker it
        // forks serve as `--user` (a worker's own drop then finds it done).
        // A SIGHUP reload reads the key as that user, as a single process
        // does.
        privileges::drop_to(user, cfg.group.as_deref()).map_err(io::Error::other)?;
        info!("supervisor: serving as {user}{}", cfg.group.as_deref().map_or(String::new(), |g| format!(":{g}")));
    }
    if let Some(path) = cfg.access_log.as_deref().filter(|&p| p != "-") {
        // Each worker opens it (as the serving user); a path that cannot be
        // opened is one error here rather than a worker failing and
        // restarting forever.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("--access-log {path}: {e}")))?;
    }
    let mut stdout = io::stdout();
    for b in &listeners {
        let addr = b.listener.local_addr()?;
        let _ = writeln!(stdout, "listening on {}://{addr}", if b.tls { "https" } else { "http" });
    }
    // Before forking: a child would otherwise print what is still buffered.
    let _ = stdout.flush();
    let supervisor = Supervisor {
        listeners,
        tls,
        board: Board::new(cfg.workers)?,
        places: (0..cfg.workers).map(|_| Place::default()).collect(),
        signals,
        allowance_ms: cfg.shutdown_timeout.as_millis() as u64 + SHUTDOWN_MARGIN_MS,
        stopping: None,
        notifier,
        killed: false,
        // SAFETY: getpid has no failure mode.
        pid: unsafe { libc::getpid() },
        epoch: Instant::now(),
    };
    info!("supervisor {}: starting {} workers", supervisor.pid, cfg.workers);
    supervisor.supervise()
}

/// What a fork left this process as.
enum Forked {
    Parent,
    Child,
}

impl Supervisor {
    fn supervise(mut self) -> io::Result<Role> {
        for i in 0..self.places.len() {
            if let Forked::Child = self.spawn(i, 0) {
                return self.into_worker(i);
            }
        }
        // The workers are forked on listeners that already accept into
        // their queue: the service is ready.
        self.say(Notifier::ready);
        loop {
            let wait = self.next_wake(self.ms());
            wait_readable(&self.signals, wait);
            let now = self.ms();
            self.read_signals(now);
            self.reap(now);
            if let Some(deadline) = self.stopping {
                if self.live() == 0 {
                    info!("supervisor: every worker has exited");
                    return Ok(Role::Exit(0));
                }
                if now >= deadline && !self.killed {
                    warn!("supervisor: {} workers still running after the shutdown timeout; killing them", self.live());
                    self.forward(libc::SIGKILL);
                    self.killed = true;
                }
                continue;
            }
            for i in 0..self.places.len() {
                let due = self.places.get(i).and_then(|p| p.restart_at).is_some_and(|t| t <= now);
                if due && let Forked::Child = self.spawn(i, now) {
                    return self.into_worker(i);
                }
            }
        }
    }

    /// Milliseconds since the supervisor started.
    fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn live(&self) -> usize {
        self.places.iter().filter(|p| p.pid.is_some()).count()
    }

    /// The next deadline: a restart, or killing stragglers.
    fn next_wake(&self, now: u64) -> Option<Duration> {
        let due = match self.stopping {
            Some(deadline) => (!self.killed).then_some(deadline),
            None => self.places.iter().filter_map(|p| p.restart_at).min(),
        }?;
        Some(Duration::from_millis(due.saturating_sub(now)))
    }

    /// Fork worker `i`. A failure (fork refused, a thread that should not
    /// be there) schedules another try with the back-off.
    fn spawn(&mut self, i: usize, now: u64) -> Forked {
        if let Some(n) = sys::threads().filter(|&n| n > 1) {
            error!("supervisor: {n} threads; forking now could leave a worker with a lock no one holds");
            let delay = self.schedule(i, now);
            warn!("worker {i} not started; trying again in {delay} ms");
            return Forked::Parent;
        }
        if let Err(e) = sys::block_signals() {
            warn!("supervisor: blocking signals: {e}");
        }
        // SAFETY: the supervisor has one thread (checked above; it starts
        // none, and neither std nor the logger does), so the child's copy of
        // every lock and allocator is consistent. The child goes straight
        // to `into_worker`; signals stay blocked until its own pipe exists.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            return Forked::Child;
        }
        let forked = io::Error::last_os_error();
        if let Err(e) = sys::unblock_signals() {
            warn!("supervisor: unblocking signals: {e}");
        }
        if pid < 0 {
            let delay = self.schedule(i, now);
            warn!("worker {i} not started: fork: {forked}; trying again in {delay} ms");
            return Forked::Parent;
        }
        if let Some(place) = self.places.get_mut(i) {
            *place = Place { pid: Some(pid), born: now, backoff: place.backoff, restart_at: None };
        }
        info!("worker {i} started: pid {pid}");
        Forked::Parent
    }

    /// Schedule place `i` to be filled again after its back-off; the delay.
    fn schedule(&mut self, i: usize, now: u64) -> u64 {
        let Some(place) = self.places.get_mut(i) else { return 0 };
        let delay = place.backoff.delay(now.saturating_sub(place.born));
        place.restart_at = Some(now + delay);
        delay
    }

    /// In the new child: become worker `i`. Its own signal pipe replaces
    /// the supervisor's, and what is not the worker's (the supervisor's
    /// pipe, its places) is dropped with `self`.
    fn into_worker(self, index: usize) -> io::Result<Role> {
        sys::default_child_signal();
        let signals = sys::signals()?;
        if !sys::end_with_parent(self.pid) {
            return Err(io::Error::other("the supervisor exited before this worker started"));
        }
        sys::unblock_signals()?;
        // The notifier's socket is the supervisor's: dropped with `self`.
        let Supervisor { listeners, tls, board, .. } = self;
        Ok(Role::Worker(Worker { index, listeners, tls, seat: Seat::new(board, index), signals }))
    }

    /// Read the signals that arrived and act on each.
    fn read_signals(&mut self, now: u64) {
        let mut bytes = [0u8; 64];
        loop {
            // SAFETY: read(2) into a local buffer from our own non-blocking
            // pipe.
            let n = unsafe { libc::read(self.signals.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
            if n <= 0 {
                return;
            }
            for &b in bytes.get(..n as usize).unwrap_or(&[]) {
                self.on_signal(b, now);
            }
        }
    }

    fn on_signal(&mut self, sig: u8, now: u64) {
        let signal = libc::c_int::from(sig);
        if sys::SIG_SHUTDOWN.contains(&sig) {
            if self.stopping.is_none() {
                info!("supervisor: {}: stopping {} workers", signal_name(signal), self.live());
                self.stopping = Some(now + self.allowance_ms);
                self.say(Notifier::stopping);
                self.listeners.clear();
                for place in &mut self.places {
                    place.restart_at = None;
                }
            }
            self.forward(signal);
        } else if sig == sys::SIG_RELOAD {
            self.say(Notifier::reloading);
            if let Some(tls) = &mut self.tls
                && let Err(e) = tls.reload()
            {
                warn!("supervisor: TLS reload refused, workers started later keep the old pair: {e}");
            }
            self.forward(signal);
            self.say(Notifier::ready);
        } else if sig == sys::SIG_REOPEN {
            self.forward(signal);
        }
    }

    /// Tell systemd (when it listens) how the service stands; a failure is
    /// worth a warning, never a stop.
    fn say(&self, what: fn(&Notifier) -> io::Result<()>) {
        if let Err(e) = what(&self.notifier) {
            warn!("supervisor: sd_notify: {e}");
        }
    }

    /// Send `signal` to every live worker.
    fn forward(&self, signal: libc::c_int) {
        for pid in self.places.iter().filter_map(|p| p.pid) {
            // SAFETY: kill(2) on a child we have not reaped yet, so the pid
            // cannot have been reused.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Collect every worker that ended: log why, free its board slot, and
    /// schedule its replacement unless shutting down.
    fn reap(&mut self, now: u64) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on our own children never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let Some(i) = self.places.iter().position(|p| p.pid == Some(pid)) else { continue };
            if let Some(place) = self.places.get_mut(i) {
                place.pid = None;
            }
            self.board.vacate(i);
            let why = describe(status);
            if self.stopping.is_some() {
                info!("worker {i} (pid {pid}) {why}");
            } else {
                let delay = self.schedule(i, now);
                warn!("worker {i} (pid {pid}) {why}; starting another in {delay} ms");
            }
        }
    }
}

/// Wait until `fd` is readable or `wait` passes (`None`: no deadline).
/// An interruption is a wake-up like any other.
fn wait_readable(fd: &OwnedFd, wait: Option<Duration>) {
    let timeout = wait.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as libc::c_int);
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll(2) on one live pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout) };
}

/// Why a worker ended, from its wait status: "exited with code 1", "was
/// killed by SIGKILL".
pub fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let core = if libc::WCOREDUMP(status) { " (core dumped)" } else { "" };
        format!("was killed by {}{core}", signal_name(libc::WTERMSIG(status)))
    } else {
        format!("ended (wait status {status})")
    }
}

/// A signal's name, for the log.
pub fn signal_name(signal: libc::c_int) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    #[test]
    fn backoff_doubles_to_five_seconds_and_resets_after_ten_lived() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.delay(50)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.delay(BACKOFF_RESET_MS - 1), 5000, "a short life keeps the delay");
        assert_eq!(b.delay(BACKOFF_RESET_MS), 100, "a long life resets it");
        assert_eq!(b.delay(0), 200);
    }

    fn wait_status(script: &str) -> libc::c_int {
        Command::new("sh").args(["-c", script]).status().unwrap().into_raw()
    }

    #[test]
    fn why_a_worker_ended_names_the_code_or_the_signal() {
        assert_eq!(describe(wait_status("exit 3")), "exited with code 3");
        assert_eq!(describe(wait_status("exit 0")), "exited with code 0");
        assert_eq!(describe(wait_status("kill -9 $$")), "was killed by SIGKILL");
        assert_eq!(describe(wait_status("kill -TERM $$")), "was killed by SIGTERM");
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(64), "signal 64");
    }

    #[test]
    fn the_next_wake_is_the_earliest_restart_or_the_kill_deadline() {
        let (read, _write) = {
            let mut fds = [0; 2];
            // SAFETY: pipe(2) fills the array; both ends are owned below.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            use std::os::fd::FromRawFd;
            // SAFETY: fresh descriptors owned by nobody else.
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        let mut s = Supervisor {
            listeners: Vec::new(),
            tls: None,
            board: Board::new(3).unwrap(),
            places: (0..3).map(|_| Place::default()).collect(),
            signals: read,
            allowance_ms: 10_000,
            stopping: None,
            notifier: Notifier::default(),
            killed: false,
            pid: 1,
            epoch: Instant::now(),
        };
        assert_eq!(s.next_wake(0), None, "nothing to do: no timeout");
        s.places[1].restart_at = Some(700);
        s.places[2].restart_at = Some(300);
        assert_eq!(s.next_wake(100), Some(Duration::from_millis(200)));
        assert_eq!(s.next_wake(400), Some(Duration::ZERO), "overdue: at once");
        // No live worker here, so nothing is signalled.
        s.on_signal(libc::SIGTERM as u8, 1000);
        assert_eq!(s.stopping, Some(11_000));
        assert!(s.places.iter().all(|p| p.restart_at.is_none()), "no restarts while stopping");
        assert_eq!(s.next_wake(1000), Some(Duration::from_millis(10_000)));
        s.killed = true;
        assert_eq!(s.next_wake(12_000), None);
    }
}

//! The few system calls std and mio do not wrap, each behind `cfg` with a
//! portable fallback: `sendfile` (three different signatures), `MSG_MORE`, the
//! listen backlog, descriptor limits, signals, and the CPUs a process may
//! use. Only the
//! Linux paths are exercised by the tests here; the BSD paths follow their
//! manual pages.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};

/// Bind and listen with an explicit backlog (std picks its own).
/// Returns the listener and the backlog the kernel will really use.
pub fn listen(addr: SocketAddr, backlog: u32) -> io::Result<(TcpListener, u32)> {
    let listener = TcpListener::bind(addr)?;
    let backlog = backlog.min(i32::MAX as u32);
    // SAFETY: listen(2) on a bound socket we own; calling it again only
    // changes the backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog as libc::c_int) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // No TCP_DEFER_ACCEPT: a client that connects and stays silent would
    // sit unaccepted in the kernel, never see the header timeout, and meet
    // a reset when it finally speaks.
    listener.set_nonblocking(true)?;
    Ok((listener, effective_backlog(backlog)))
}

/// Linux silently caps the backlog at `net.core.somaxconn`.
fn effective_backlog(asked: u32) -> u32 {
    match std::fs::read_to_string("/proc/sys/net/core/somaxconn") {
        Ok(s) => s.trim().parse::<u32>().map_or(asked, |max| asked.min(max)),
        Err(_) => asked,
    }
}

/// Read into `buf`'s spare capacity (no zeroing), growing its length by
/// what was read. Retries on EINTR.
pub fn read_into_spare(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        let spare = buf.spare_capacity_mut();
        // SAFETY: read(2) writes at most `spare.len()` bytes into memory we
        // own and do not otherwise touch during the call.
        let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
        if n >= 0 {
            // SAFETY: the kernel initialised exactly `n` bytes past `len`.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Set `TCP_NODELAY` on the listener: Linux copies it to every accepted
/// socket, saving a system call per connection. Elsewhere it is set on
/// each connection.
pub fn nodelay_listener(listener: &TcpListener) -> bool {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return false;
    }
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Write bytes; `more` says a file body follows at once, so the kernel may
/// hold a partial segment back (Linux `MSG_MORE`, saving a small packet).
pub fn send(fd: RawFd, buf: &[u8], more: bool) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = {
        let _ = more;
        0
    };
    // SAFETY: buf is a live slice; the length passed is its length.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Send `len` bytes of `file` from `off` to the socket without copying
/// them through user space. Returns bytes sent.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn sendfile(sock: RawFd, file: &File, off: u64, len: u64) -> io::Result<usize> {
    let mut offset = off as libc::off_t;
    let count = len.min(isize::MAX as u64) as usize;
    // SAFETY: both descriptors are open; offset is a live local.
    let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut offset, count) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

#[cfg(any(target_os = "freebsd", target_os = "dragonfly"))]
pub fn sendfile(sock: RawFd, file: &File, off: u64, len: u64) -> io::Result<usize> {
    let mut sent: libc::off_t = 0;
    // SAFETY: both descriptors are open; no header/trailer vectors.
    let rc = unsafe {
        libc::sendfile(file.as_raw_fd(), sock, off as libc::off_t, len as usize, std::ptr::null_mut(), &mut sent, 0)
    };
    // FreeBSD reports partial progress together with EAGAIN.
    if rc < 0 && sent == 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
pub fn sendfile(sock: RawFd, file: &File, off: u64, len: u64) -> io::Result<usize> {
    let mut sent = len as libc::off_t;
    // SAFETY: both descriptors are open; `sent` is in/out.
    let rc = unsafe { libc::sendfile(file.as_raw_fd(), sock, off as libc::off_t, &mut sent, std::ptr::null_mut(), 0) };
    if rc < 0 && sent == 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
}

/// Elsewhere: read a slice and write it (correct, one copy).
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "macos",
    target_os = "ios"
)))]
pub fn sendfile(sock: RawFd, file: &File, off: u64, len: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 16 * 1024];
    let want = len.min(buf.len() as u64) as usize;
    let n = file.read_at(&mut buf[..want], off)?;
    send(sock, &buf[..n], false)
}

/// Raise the soft descriptor limit to the hard one; return the limit now in
/// force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a pointer to a live struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// A descriptor held in reserve for descriptor exhaustion: closing it lets
/// the loop accept one connection and close it, instead of spinning on
/// EMFILE while the backlog fills (libuv's trick).
pub fn reserve_fd() -> Option<File> {
    File::open("/dev/null").ok()
}

/// Bytes waiting in a socket's receive queue (`FIONREAD`); 0 on error.
pub fn bytes_readable(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl FIONREAD writes one c_int through the pointer.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc < 0 { 0 } else { n.max(0) as usize }
}

pub fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

pub fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM))
}

/// The write end of the signal self-pipe, for the handler.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // Signal numbers fit a byte: the loop reads which one it was.
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking,
        // so a full pipe just drops the byte (the loop drains it each turn,
        // and one of each kind is enough).
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// The signals the loop handles, as the bytes `signals` writes.
pub const SIG_SHUTDOWN: [u8; 2] = [libc::SIGTERM as u8, libc::SIGINT as u8];
/// SIGHUP: load the TLS certificate and key again.
pub const SIG_RELOAD: u8 = libc::SIGHUP as u8;
/// SIGUSR1: reopen the access log (logrotate's convention).
pub const SIG_REOPEN: u8 = libc::SIGUSR1 as u8;
/// SIGCHLD: a worker ended (the supervisor's pipe only).
pub const SIG_CHILD: u8 = libc::SIGCHLD as u8;

/// Every signal that `signals` and `watch_children` route to the pipe.
const PIPED: [libc::c_int; 5] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGCHLD];

/// SIGTERM, SIGINT, SIGHUP and SIGUSR1 write their number as a byte to a
/// pipe that the loop polls (the self-pipe trick: the handler does nothing
/// else). SIGPIPE is ignored: a peer that vanished is an error return,
/// never a dead server. Returns the read end. Called again (in a forked
/// worker), it replaces the pipe and closes the old write end, so the
/// worker's signals never land in its supervisor's pipe.
pub fn signals() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two-element array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for fd in fds {
        // SAFETY: fcntl on descriptors we just created.
        unsafe {
            libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    let old = SIGNAL_PIPE.swap(fds[1], std::sync::atomic::Ordering::Relaxed);
    if old >= 0 {
        // SAFETY: the previous write end is ours and no longer published to
        // the handler (swapped out above).
        unsafe { libc::close(old) };
    }
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
        on_signal_write(sig, 0)?;
    }
    // SAFETY: ignoring SIGPIPE changes no memory.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: fds[0] is the fresh read end, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) })
}

/// The supervisor's SIGCHLD goes to the same pipe (after `signals`), so
/// that it learns of a worker's end without blocking in `waitpid`. Stops
/// and continues are not reported (`SA_NOCLDSTOP`): only ends matter.
pub fn watch_children() -> io::Result<()> {
    on_signal_write(libc::SIGCHLD, libc::SA_NOCLDSTOP)
}

/// Install `on_signal` for `sig`.
fn on_signal_write(sig: libc::c_int, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: a zeroed sigaction whose handler is an extern "C" fn that
    // only calls write(2).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = libc::SA_RESTART | flags;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A forked worker does not watch children: SIGCHLD back to its default.
pub fn default_child_signal() {
    // SAFETY: restoring a default disposition changes no memory.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// The piped signals, held back (blocked) while a worker is forked: one
/// sent to the new worker before it has a pipe of its own stays pending
/// until `unblock_signals`, rather than landing in the supervisor's pipe.
pub fn block_signals() -> io::Result<()> {
    mask_signals(libc::SIG_BLOCK)
}

pub fn unblock_signals() -> io::Result<()> {
    mask_signals(libc::SIG_UNBLOCK)
}

fn mask_signals(how: libc::c_int) -> io::Result<()> {
    // SAFETY: sigset_t is plain data filled by sigemptyset/sigaddset; the
    // process has one thread, so sigprocmask is its mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in PIPED {
            libc::sigaddset(&mut set, sig);
        }
        if libc::sigprocmask(how, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How many CPUs this process may run on: its affinity mask on Linux
/// (`taskset`, cpusets), else what std reports; at least 1.
pub fn cpus() -> usize {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity fills at most
        // its size; CPU_COUNT reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                return (libc::CPU_COUNT(&set) as usize).max(1);
            }
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Threads in this process, where the system says (Linux: `/proc`).
/// `fork` copies only the calling thread, so the supervisor checks that it
/// is alone before each fork.
pub fn threads() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 20 is num_threads; after the ")" closing the command it is 18th.
    stat.rsplit(')').next()?.split_whitespace().nth(17)?.parse().ok()
}

/// A forked worker asks to get SIGTERM when its supervisor dies (Linux),
/// so that killing the supervisor, even with SIGKILL, ends the workers
/// gracefully instead of leaving them serving unsupervised. Returns false
/// when the supervisor is already gone.
pub fn end_with_parent(parent: libc::pid_t) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
    }
    // SAFETY: getppid has no failure mode. Checked after the prctl: a
    // parent that died before it would never send the signal.
    unsafe { libc::getppid() == parent }
}

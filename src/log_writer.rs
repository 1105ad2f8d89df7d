//! The access log's writer: a small process forked at start-up that copies
//! what the server puts into a pipe onto the log file, so that the loop
//! never waits for a disk.
//!
//! Why a process: `O_NONBLOCK` means nothing for a regular file (a write
//! to a slow or stalled disk blocks whatever the flag says), and a thread
//! is not allowed here. A pipe is the one descriptor with real
//! non-blocking writes: the server writes each turn's lines into it and
//! never waits; when it is full (the writer is behind the disk), lines wait
//! in the server's bounded buffer and past that are dropped and counted
//! (`access_log_dropped` in `/_status`). The writer blocks on the disk in
//! its place. Lines the writer itself cannot write (a full disk) are
//! counted in a word of shared memory that the server adds to the count.
//!
//! Reopening (logrotate's SIGUSR1): the server writes a byte on a second
//! pipe; the writer finishes the lines it holds in the old file, opens the
//! path again (creating it) and goes on in the new one. Only whole lines
//! are written, so a line is never torn between the two files, and none is
//! lost: lines still in the pipe go to the new file.
//!
//! Privileges: the writer is forked after the server dropped to `--user`
//! (`Server::with_setup`), and the file is opened before the fork, as that
//! user. So every open, the first and each reopen after rotation, is made
//! with the same rights: a log directory the user cannot write is refused
//! at start-up, not discovered at the first rotation, and no root process
//! ever opens a path in a directory a compromised server could plant a
//! symlink in (the attack on root-run log reopening that nginx packages met
//! in CVE-2016-1247).
//!
//! The child runs only async-signal-safe system calls on memory prepared
//! before the fork (no allocation, no lock, no Rust I/O), so the fork is
//! sound even from a multi-threaded test process. It ignores SIGTERM,
//! SIGINT, SIGHUP and SIGUSR1 (signals meant for the server may reach the
//! whole process group or cgroup) and exits when the pipe reaches its end:
//! when the server has exited, whatever way.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The writer's buffer: lines are copied through it whole.
const CHILD_BUFFER: usize = 256 * 1024;
/// The pipe's capacity asked for (Linux `F_SETPIPE_SZ`; the unprivileged
/// maximum by default): about ten thousand lines of slack for the disk.
const PIPE_SIZE: libc::c_int = 1 << 20;
/// How long the server waits at exit for the writer to finish.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Mode of a log file the writer creates (before the umask).
const FILE_MODE: libc::c_uint = 0o644;

/// The server's side of a running writer.
pub struct Writer {
    /// The pipe's write end, non-blocking.
    data: Option<File>,
    /// A byte on it asks for a reopen; non-blocking.
    control: Option<File>,
    pid: libc::pid_t,
    /// Lines the writer could not write, counted by the writer.
    lost: Shared,
}

impl Writer {
    /// Open `path` (or standard output for `-`) and fork the writer. The
    /// file is opened here, in the server, with its rights: an error is
    /// the server's start-up error.
    pub fn spawn(target: &str) -> io::Result<Writer> {
        let (sink, path) = if target == "-" {
            // A duplicate of standard output, left blocking: the writer may
            // wait on it; the server's own descriptor 1 is never touched.
            // SAFETY: fcntl(2) F_DUPFD_CLOEXEC returns a new descriptor we
            // own, or -1.
            let fd = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is fresh and owned by nobody else.
            (unsafe { OwnedFd::from_raw_fd(fd) }, None)
        } else {
            let path = CString::new(Path::new(target).as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "access log path contains a NUL byte"))?;
            let fd = open_log(&path);
            if fd < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("access log {target}: {e}")));
            }
            // SAFETY: as above.
            (unsafe { OwnedFd::from_raw_fd(fd) }, Some(path))
        };
        let (data_r, data_w) = pipe()?;
        let (control_r, control_w) = pipe()?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        // SAFETY: fcntl on our own pipe; failure leaves the default size.
        unsafe {
            libc::fcntl(data_w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
        }
        let lost = Shared::new()?;
        let mut buf = vec![0u8; CHILD_BUFFER];
        let child = Child {
            data: data_r.as_raw_fd(),
            control: control_r.as_raw_fd(),
            sink: sink.as_raw_fd(),
            path: path.as_ref().map(|p| p.as_ptr()),
            lost: lost.counter(),
        };
        // SAFETY: fork(2). The child runs `Child::run`, which makes only
        // async-signal-safe system calls on memory prepared above and
        // never returns (it ends in _exit), so the fork is sound even if
        // other threads exist.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            child.run(&mut buf);
        }
        // The parent keeps the write ends only; the child has its copies
        // of the rest.
        drop((data_r, control_r, sink, buf));
        let data = File::from(data_w);
        let control = File::from(control_w);
        set_nonblocking(data.as_raw_fd())?;
        set_nonblocking(control.as_raw_fd())?;
        Ok(Writer { data: Some(data), control: Some(control), pid, lost })
    }

    /// Write as much of `bytes` as the pipe takes now; never blocks.
    pub fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        let Some(data) = &self.data else { return Err(io::ErrorKind::BrokenPipe.into()) };
        loop {
            // SAFETY: write(2) from a live slice into our own pipe.
            let n = unsafe { libc::write(data.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Ask the writer to reopen its file (after the lines it holds).
    pub fn reopen(&self) {
        if let Some(control) = &self.control {
            // A full control pipe means a reopen is already pending.
            // SAFETY: write(2) of one byte into our own pipe.
            unsafe { libc::write(control.as_raw_fd(), b"r".as_ptr().cast(), 1) };
        }
    }

    /// Lines the writer could not write (a full disk, a closed stdout).
    pub fn lost(&self) -> u64 {
        self.lost.get()
    }

    /// Close the pipes and give the writer a moment to finish: the server
    /// is exiting, so waiting no longer stalls anyone.
    pub fn finish(&mut self) {
        self.data = None;
        self.control = None;
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) on our own child, without blocking.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if rc != 0 || Instant::now() >= deadline {
                // Reaped, or gone (ECHILD), or slow: it finishes on its own.
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.data.is_some() {
            self.finish();
        }
    }
}

fn open_log(path: &CString) -> RawFd {
    // SAFETY: open(2) with a NUL-terminated path we own.
    unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC, FILE_MODE) }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two-element array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in fds {
        // SAFETY: fcntl on descriptors we just created.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((r, w))
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A counter in a shared anonymous mapping: written by the writer, read
/// by the server, no system call either way.
struct Shared {
    ptr: *mut AtomicU64,
}

impl Shared {
    fn new() -> io::Result<Shared> {
        // SAFETY: an anonymous shared mapping of one page; zeroed by the
        // kernel, which is a valid AtomicU64.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<AtomicU64>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Shared { ptr: p.cast() })
    }

    fn counter(&self) -> *const AtomicU64 {
        self.ptr
    }

    fn get(&self) -> u64 {
        // SAFETY: the mapping lives as long as self; atomics are sound on
        // memory shared between processes.
        unsafe { (*self.ptr).load(Ordering::Relaxed) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping (the writer keeps its copy).
        unsafe { libc::munmap(self.ptr.cast(), std::mem::size_of::<AtomicU64>()) };
    }
}

/// What the child works with: raw descriptors and pointers, all prepared
/// before the fork.
struct Child {
    data: RawFd,
    control: RawFd,
    sink: RawFd,
    /// The path to reopen; `None` for standard output.
    path: Option<*const libc::c_char>,
    lost: *const AtomicU64,
}

impl Child {
    /// The writer's whole life. Async-signal-safe calls only (see the
    /// module comment); never returns.
    fn run(mut self, buf: &mut [u8]) -> ! {
        // SAFETY: sigaction(2) with SIG_IGN, and close_others' close calls,
        // are async-signal-safe; the descriptors kept are ours.
        unsafe {
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGPIPE] {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = libc::SIG_IGN;
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
            // Listeners, the poll, other pipes: a writer that kept them
            // would keep ports open after the server exits.
            let mut keep = [self.data, self.control, self.sink];
            keep.sort_unstable();
            close_others(&keep);
        }
        let mut held = 0usize;
        let mut control_open = true;
        loop {
            let mut fds = [
                libc::pollfd { fd: self.data, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: if control_open { self.control } else { -1 }, events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: poll(2) on a live two-element array.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                continue;
            }
            let mut reopen = false;
            if fds[1].revents != 0 {
                let mut bytes = [0u8; 16];
                // SAFETY: read(2) into a local array.
                let n = unsafe { libc::read(self.control, bytes.as_mut_ptr().cast(), bytes.len()) };
                reopen = n > 0;
                control_open = n != 0;
            }
            if fds[0].revents != 0 {
                let spare = &mut buf[held..];
                // SAFETY: read(2) into the unused end of the buffer.
                let n = unsafe { libc::read(self.data, spare.as_mut_ptr().cast(), spare.len()) };
                if n == 0 {
                    // The server is gone: the rest, even a partial line.
                    self.write_out(&buf[..held]);
                    // SAFETY: _exit(2) skips destructors and atexit handlers,
                    // which belong to the server.
                    unsafe { libc::_exit(0) };
                }
                held += n.max(0) as usize;
            }
            // Whole lines only, so a reopen never tears one; a full buffer
            // without a newline (no such line is made) goes out as it is.
            let whole = match buf[..held].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if held == buf.len() => held,
                None => 0,
            };
            if whole > 0 {
                self.write_out(&buf[..whole]);
                buf.copy_within(whole..held, 0);
                held -= whole;
            }
            if reopen {
                self.reopen();
            }
        }
    }

    /// Write `bytes` whole to the sink (blocking: this process may wait);
    /// what cannot be written is counted as lost lines.
    fn write_out(&self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // SAFETY: write(2) from a live slice.
            let n = unsafe { libc::write(self.sink, bytes.as_ptr().cast(), bytes.len()) };
            if n > 0 {
                bytes = &bytes[n as usize..];
            } else if n < 0 && errno() == libc::EINTR {
                continue;
            } else {
                let lines = bytes.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
                // SAFETY: the shared mapping outlives this process's use.
                unsafe { (*self.lost).fetch_add(lines, Ordering::Relaxed) };
                return;
            }
        }
    }

    /// Open the path again; on failure keep writing the old file and say
    /// so on stderr (the journal, under systemd).
    fn reopen(&mut self) {
        let Some(path) = self.path else { return };
        // SAFETY: open(2) with the NUL-terminated path kept from before the
        // fork; close(2) of the descriptor it replaces.
        let fd =
            unsafe { libc::open(path, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC, FILE_MODE) };
        if fd < 0 {
            let msg = b"linger: access log: reopen failed; still writing the old file\n";
            // SAFETY: write(2) of a static message to stderr.
            unsafe { libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), msg.len()) };
            return;
        }
        // SAFETY: the old sink is ours to close.
        unsafe { libc::close(self.sink) };
        self.sink = fd;
    }
}

fn errno() -> libc::c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Close every descriptor from 3 on except `keep` (sorted). Linux's
/// close_range(2) does each gap in one call; elsewhere, or where it is
/// refused (older kernels, seccomp), one close per descriptor.
///
/// # Safety
/// Only in a process that owns every descriptor it closes (the child).
unsafe fn close_others(keep: &[RawFd]) {
    let mut from: RawFd = 3;
    for &k in keep {
        if k > from {
            // SAFETY: as the function's contract.
            unsafe { close_range(from, k - 1) };
        }
        from = from.max(k + 1);
    }
    // SAFETY: as above.
    unsafe { close_range(from, RawFd::MAX) };
}

unsafe fn close_range(first: RawFd, last: RawFd) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: close_range(2) takes plain integers.
        if unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, last as libc::c_uint, 0) } == 0 {
            return;
        }
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) fills a live struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let max = (lim.rlim_cur.min(1 << 20) as RawFd).min(last.saturating_add(1).max(first));
    for fd in first..max {
        // SAFETY: closing a descriptor this process owns, or EBADF.
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("linger-writer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }

    #[test]
    fn lines_go_to_the_file_and_a_reopen_loses_none() {
        let dir = temp("reopen");
        let log = dir.join("access.log");
        let mut w = Writer::spawn(log.to_str().unwrap()).unwrap();
        let mut sent = 0;
        for round in 0..3 {
            for i in 0..1000 {
                let line = format!("round {round} line {i}\n");
                let mut bytes = line.as_bytes();
                while !bytes.is_empty() {
                    match w.write(bytes) {
                        Ok(n) => bytes = &bytes[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                        Err(e) => panic!("{e}"),
                    }
                }
                sent += 1;
            }
            // logrotate: rename, then the signal (here, its forwarding).
            std::fs::rename(&log, dir.join(format!("access.log.{round}"))).unwrap();
            w.reopen();
            // The writer creates the file anew before the next rotation.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !log.exists() {
                assert!(Instant::now() < deadline, "not reopened");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        w.finish();
        let total: usize = (0..3).map(|r| lines(&dir.join(format!("access.log.{r}")))).sum::<usize>() + lines(&log);
        assert_eq!(total, sent);
        assert_eq!(w.lost(), 0);
        // Whole lines in every file.
        for r in 0..3 {
            let text = std::fs::read_to_string(dir.join(format!("access.log.{r}"))).unwrap();
            assert!(text.is_empty() || text.ends_with('\n'));
            assert!(text.lines().all(|l| l.starts_with("round ")), "no torn line");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unopenable_log_is_a_start_up_error() {
        let e = Writer::spawn("/definitely/not/here/access.log").err().unwrap();
        assert!(e.to_string().starts_with("access log /definitely/not/here/access.log: "), "{e}");
    }

    #[test]
    fn the_writer_holds_no_other_descriptor() {
        let dir = temp("fds");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut w = Writer::spawn(dir.join("a.log").to_str().unwrap()).unwrap();
        // Give the child a moment to close what it inherited.
        let fds = format!("/proc/{}/fd", w.pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        let count = loop {
            let n = std::fs::read_dir(&fds).map_or(0, |d| d.count());
            if n <= 6 || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(count <= 6, "stdin, stdout, stderr, two pipes and the file: {count}");
        drop(listener);
        w.finish();
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! The two halves of the systemd service protocol that a server needs, done
//! without libsystemd: socket activation (read sd_listen_fds(3) first) and
//! readiness notification (sd_notify(3)). Both are plain environment
//! variables and descriptors, so a few system calls suffice; nothing here
//! runs in the hot path.
//!
//! # Socket activation
//!
//! The manager binds the sockets, starts the service with them open from
//! descriptor 3 on, and says so in three variables: `LISTEN_PID` (the
//! process they are meant for), `LISTEN_FDS` (how many) and, optionally,
//! `LISTEN_FDNAMES` (a colon-separated name per descriptor, from each socket
//! unit's `FileDescriptorName=`).
//!
//! **Which listeners speak TLS.** A descriptor named `tls` or `https` is a
//! TLS listener; any other name (`http`, or systemd's default, the socket
//! unit's own name) is plain HTTP. `FileDescriptorName=` names *every*
//! socket of its unit, so plain and TLS ports live in two socket units
//! (`dist/linger.socket` with `FileDescriptorName=http`,
//! `dist/linger-tls.socket` with `FileDescriptorName=tls`), both listed in
//! the service's `Sockets=`. With `systemd-socket-activate`, pass
//! `--fdname=tls` for the same effect.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{self, UnixDatagram};

/// sd_listen_fds(3): passed descriptors start right after stdin, stdout
/// and stderr.
pub const LISTEN_FDS_START: RawFd = 3;

const LISTEN_PID: &str = "LISTEN_PID";
const LISTEN_FDS: &str = "LISTEN_FDS";
const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// A listening TCP socket handed over by the service manager.
#[derive(Debug)]
pub struct Inherited {
    /// Listening, close-on-exec and non-blocking. Convert with
    /// `std::net::TcpListener::from(fd)` and `mio::net::TcpListener::from_std`.
    pub fd: OwnedFd,
    /// The address it is bound to (`getsockname`), for the start-up line.
    pub addr: SocketAddr,
    /// Named `tls` or `https` in `LISTEN_FDNAMES` (see the module comment).
    pub tls: bool,
}

/// The listeners passed by socket activation, in descriptor order; empty
/// when the process was not socket-activated (no `LISTEN_PID`) or the
/// variables were meant for another process (`LISTEN_PID` is not ours: a
/// parent that was activated and did not clear them).
///
/// Call it first thing in `main`, before opening any file: the descriptors
/// from 3 on are taken over as owned, which is sound only while nothing
/// else in the process has claimed them. As sd_listen_fds(3) does with
/// `unset_environment`, the three variables are removed whatever the
/// outcome, so a child never mistakes them for its own, and a second call
/// finds nothing and cannot take the same descriptors twice.
///
/// Errors are one line: a malformed variable, a descriptor that is not
/// open, or one that is not a listening TCP stream socket (`Accept=yes` in
/// a socket unit passes connections, which linger does not take).
pub fn inherited_listeners() -> Result<Vec<Inherited>, String> {
    let pid = std::env::var_os(LISTEN_PID);
    let fds = std::env::var_os(LISTEN_FDS);
    let names = std::env::var_os(LISTEN_FDNAMES);
    if pid.is_some() || fds.is_some() || names.is_some() {
        unset_listen_env();
    }
    let Some(pid) = pid else { return Ok(Vec::new()) };
    let pid = parse_number(LISTEN_PID, &pid)?;
    if pid != u64::from(std::process::id()) {
        return Ok(Vec::new());
    }
    let count = match fds {
        Some(fds) => parse_number(LISTEN_FDS, &fds)?,
        None => return Ok(Vec::new()),
    };
    // sd_listen_fds(3) refuses a count that would run past the largest
    // descriptor number; so do we, before touching any descriptor.
    let count = RawFd::try_from(count)
        .ok()
        .filter(|n| *n <= RawFd::MAX - LISTEN_FDS_START)
        .ok_or_else(|| format!("{LISTEN_FDS}={count} is out of range"))?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let names = match names {
        Some(names) => {
            let names = names.into_string().map_err(|_| format!("{LISTEN_FDNAMES} is not UTF-8"))?;
            let names: Vec<String> = names.split(':').map(str::to_owned).collect();
            if names.len() != count as usize {
                return Err(format!("{LISTEN_FDNAMES} has {} names for {LISTEN_FDS}={count}", names.len()));
            }
            names
        }
        None => vec![String::new(); count as usize],
    };

    // Take every descriptor first (so an error below closes them all: the
    // server is about to exit, and the manager keeps its own copies), then
    // check each.
    let mut owned = Vec::with_capacity(count as usize);
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + count {
        // SAFETY: fcntl(2) F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("{LISTEN_FDS}={count} but descriptor {fd} is not open"));
        }
        // SAFETY: the manager passed descriptors 3..3+count to this process
        // (LISTEN_PID is ours); nothing else claims them when this is
        // called before any file is opened, and the variables are already
        // gone, so no second call can claim them again.
        owned.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    owned
        .into_iter()
        .zip(names)
        .map(|(fd, name)| {
            let raw = fd.as_raw_fd();
            let addr = check_listener(raw).map_err(|e| format!("inherited descriptor {raw} ({}): {e}", show(&name)))?;
            Ok(Inherited { fd, addr, tls: is_tls_name(&name) })
        })
        .collect()
}

/// The naming convention (module comment): `tls` or `https` mean TLS.
fn is_tls_name(name: &str) -> bool {
    name == "tls" || name == "https"
}

fn show(name: &str) -> &str {
    if name.is_empty() { "unnamed" } else { name }
}

fn parse_number(var: &str, value: &OsString) -> Result<u64, String> {
    value
        .to_str()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("{var}={} is not a number", value.to_string_lossy()))
}

/// Remove the three activation variables, but only while this is the
/// process's one thread.
///
/// `std::env::remove_var` is unsafe (edition 2024) because another thread
/// could read the environment at the same moment (`getenv` in a libc
/// function, say) and see freed memory. With a single thread nobody else
/// runs, and none can be started during the call, so the invariant holds.
/// With more threads, or where the count cannot be read, the variables
/// stay: a child would then see a `LISTEN_PID` that is not its own and
/// ignore them, which is why systemd puts the pid there.
fn unset_listen_env() {
    if !single_threaded() {
        log::debug!("socket activation: more than one thread, leaving LISTEN_* in the environment");
        return;
    }
    for var in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES] {
        // SAFETY: single-threaded (checked just above), see the comment.
        unsafe { std::env::remove_var(var) };
    }
}

/// Whether this process has exactly one thread (Linux: one entry in
/// `/proc/self/task`). Elsewhere the answer is unknown, so "no".
fn single_threaded() -> bool {
    match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks.take(2).count() == 1,
        Err(_) => false,
    }
}

/// Check that `fd` is a listening TCP stream socket, make it close-on-exec
/// and non-blocking, and return its address.
fn check_listener(fd: RawFd) -> Result<SocketAddr, String> {
    let kind = getsockopt_int(fd, libc::SO_TYPE).map_err(|e| format!("not a socket ({e})"))?;
    if kind != libc::SOCK_STREAM {
        return Err(format!("not a stream socket (SO_TYPE {kind})"));
    }
    let listening = getsockopt_int(fd, libc::SO_ACCEPTCONN).map_err(|e| format!("SO_ACCEPTCONN: {e}"))?;
    if listening == 0 {
        return Err("not listening (a socket unit with Accept=yes passes connections; linger needs Accept=no)".into());
    }
    let addr = local_addr(fd)?;
    // The manager passes the descriptors without FD_CLOEXEC (they had to
    // survive its exec); sd_listen_fds(3) sets it, and so does this:
    // without it any child the server starts would hold the port open.
    // SAFETY: fcntl(2) on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {
            return Err(format!("FD_CLOEXEC: {}", io::Error::last_os_error()));
        }
    }
    // mio needs a non-blocking listener. O_NONBLOCK belongs to the open
    // file description, shared with the manager's copy, and systemd.service(5)
    // asks services not to change it: the unit says `NonBlocking=yes`, which
    // makes this a no-op. It is set here only when the flag is missing
    // (systemd-socket-activate, or a unit without the option), where a
    // blocking accept would stall the whole loop.
    // SAFETY: fcntl(2) on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(format!("F_GETFL: {}", io::Error::last_os_error()));
        }
        if flags & libc::O_NONBLOCK == 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(format!("O_NONBLOCK: {}", io::Error::last_os_error()));
        }
    }
    Ok(addr)
}

fn getsockopt_int(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into a live c_int.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, option, (&mut value as *mut libc::c_int).cast(), &mut len) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(value) }
}

/// getsockname(2), for IPv4 and IPv6 only: linger serves TCP.
fn local_addr(fd: RawFd) -> Result<SocketAddr, String> {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname(2) writes at most `len` bytes into `storage`.
    if unsafe { libc::getsockname(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) } < 0 {
        return Err(format!("getsockname: {}", io::Error::last_os_error()));
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for any address.
            let sin = unsafe { &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        libc::AF_UNIX => Err("not a TCP socket (a Unix domain socket)".into()),
        family => Err(format!("not a TCP socket (address family {family})")),
    }
}

/// Readiness and status for the service manager (sd_notify(3)), for units
/// with `Type=notify`. Each message is one datagram to `NOTIFY_SOCKET`
/// from a non-blocking socket: a manager that is not reading costs a
/// dropped message, never a stalled loop. Without `NOTIFY_SOCKET` every
/// call does nothing, so the server can call it unconditionally.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug)]
struct Target {
    sock: UnixDatagram,
    addr: net::SocketAddr,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`: an absolute path, or `@name` for Linux's
    /// abstract namespace. Absent or empty gives a notifier that does
    /// nothing. The variable stays in the environment (no unsafe
    /// `remove_var`): `NotifyAccess=main`, the default for `Type=notify`,
    /// already ignores messages from any other process.
    pub fn from_env() -> Result<Notifier, String> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) if !path.is_empty() => Notifier::to(&path),
            _ => Ok(Notifier::default()),
        }
    }

    /// A notifier for the socket named like `NOTIFY_SOCKET`.
    pub fn to(name: &std::ffi::OsStr) -> Result<Notifier, String> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = name.as_bytes();
        let shown = name.to_string_lossy();
        let addr = match bytes.first() {
            Some(b'/') => net::SocketAddr::from_pathname(name).map_err(|e| format!("NOTIFY_SOCKET={shown}: {e}"))?,
            Some(b'@') => abstract_addr(&bytes[1..]).map_err(|e| format!("NOTIFY_SOCKET={shown}: {e}"))?,
            // systemd 254 added vsock: for virtual machines, irrelevant here.
            _ => return Err(format!("NOTIFY_SOCKET={shown}: not an absolute path or @abstract name")),
        };
        let sock = UnixDatagram::unbound().map_err(|e| format!("notify socket: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| format!("notify socket: {e}"))?;
        Ok(Notifier { target: Some(Target { sock, addr }) })
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: listeners are open (and privileges dropped); systemd
    /// then starts the units ordered after this one.
    pub fn ready(&self) -> io::Result<()> {
        self.notify("READY=1")
    }

    /// `STOPPING=1`: shutdown began (on SIGTERM, before draining).
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, sd_notify(3)'s pair for a
    /// reload in progress (SIGHUP); follow with `ready()` when done.
    pub fn reloading(&self) -> io::Result<()> {
        if !self.is_enabled() {
            return Ok(());
        }
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime(2) fills a live timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let usec = (ts.tv_sec as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec as u64 / 1000);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
    }

    /// `STATUS=...`: one line shown by `systemctl status`. Newlines would
    /// start new assignments, so they become spaces.
    pub fn status(&self, text: &str) -> io::Result<()> {
        if !self.is_enabled() {
            return Ok(());
        }
        let line: String = text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
        self.notify(&format!("STATUS={line}"))
    }

    /// Send newline-separated `VAR=value` assignments in one datagram.
    /// `WouldBlock` means the manager's queue is full and the message was
    /// dropped.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some(t) => t.sock.send_to_addr(state.as_bytes(), &t.addr).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// What the server does with a message that did not go (the manager's
/// queue is full, or it went away): a line at debug level, nothing more.
pub fn notify(sent: io::Result<()>, what: &str) {
    if let Err(e) = sent {
        log::debug!("sd_notify {what}: {e}");
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_: &[u8]) -> io::Result<net::SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket names are Linux-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The environment is process-wide and unit tests run in threads, so
    // nothing here sets a variable: `tests/systemd.rs`, a binary of its
    // own without the test harness, covers `inherited_listeners` and
    // `Notifier::from_env` end to end.

    #[test]
    fn tls_names() {
        assert!(is_tls_name("tls"));
        assert!(is_tls_name("https"));
        for plain in ["http", "", "linger.socket", "TLS", "tls2", "connection"] {
            assert!(!is_tls_name(plain), "{plain}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("X", &OsString::from("42")), Ok(42));
        assert_eq!(parse_number("X", &OsString::from("-1")), Err("X=-1 is not a number".into()));
        assert_eq!(parse_number("X", &OsString::from("")), Err("X= is not a number".into()));
    }

    #[test]
    fn listener_checks_on_real_sockets() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(check_listener(tcp.as_raw_fd()), Ok(tcp.local_addr().unwrap()));
        let v6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(v6) = v6 {
            assert_eq!(check_listener(v6.as_raw_fd()), Ok(v6.local_addr().unwrap()));
        }
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(check_listener(udp.as_raw_fd()).unwrap_err().starts_with("not a stream socket"));
        let dir = temp_dir("check");
        let unix = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        assert!(check_listener(unix.as_raw_fd()).unwrap_err().starts_with("not a TCP socket"));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(check_listener(file.as_raw_fd()).unwrap_err().starts_with("not a socket"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn notifier_sends_to_a_path() {
        let dir = temp_dir("notify");
        let path = dir.join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(path.as_os_str()).unwrap();
        assert!(n.is_enabled());
        n.ready().unwrap();
        n.status("serving\n2 listeners").unwrap();
        n.stopping().unwrap();
        n.reloading().unwrap();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..4 {
            let len = manager.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(&got[..3], ["READY=1", "STATUS=serving 2 listeners", "STOPPING=1"]);
        assert!(got[3].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{}", got[3]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifier_sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("linger-test-{}-{:?}", std::process::id(), std::thread::current().id());
        let addr = net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(std::ffi::OsStr::new(&format!("@{name}"))).unwrap().ready().unwrap();
        let mut buf = [0u8; 64];
        let len = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn notifier_never_blocks_or_fails_loudly() {
        // Nobody listening: an error to log, not a hang or a panic.
        let dir = temp_dir("gone");
        let n = Notifier::to(dir.join("nobody").as_os_str()).unwrap();
        assert!(n.ready().is_err());
        // A manager that stops reading: the queue fills, sends fail with
        // WouldBlock instead of blocking.
        let path = dir.join("full");
        let _manager = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(path.as_os_str()).unwrap();
        let blocked = (0..100_000).map(|_| n.status("x".repeat(1000).as_str())).find_map(Result::err);
        assert_eq!(blocked.map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
        // Malformed names.
        assert!(Notifier::to(std::ffi::OsStr::new("relative/path")).is_err());
        assert!(Notifier::to(std::ffi::OsStr::new("vsock:2:1234")).is_err());
        // Disabled: every call is a no-op.
        let off = Notifier::default();
        assert!(!off.is_enabled());
        assert!(off.ready().is_ok() && off.stopping().is_ok() && off.status("x").is_ok() && off.reloading().is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("linger-systemd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

//! Socket activation and readiness notification end to end: the test plays
//! the service manager, putting real listeners at descriptors 3 and up and
//! setting `LISTEN_*` and `NOTIFY_SOCKET` itself; then, when Debian's
//! `systemd-socket-activate` is installed, the same through that tool.
//!
//! Then linger itself: started with a listener at descriptor 3 and
//! `LISTEN_*` set for its own pid (as systemd's exec would), under
//! `systemd-socket-activate`, and telling a `NOTIFY_SOCKET` when it is
//! ready, reloading and stopping.
//!
//! A binary of its own without the test harness (`harness = false`): the
//! environment is process-wide, and here `main` is the only thread, which
//! is also what lets `inherited_listeners` clear the variables (it leaves
//! them alone while other threads could be reading them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use linger::systemd::{self, Notifier};

mod support;

const CHILD_FLAG: &str = "--activated-child";

fn main() {
    if std::env::args().nth(1).as_deref() == Some(CHILD_FLAG) {
        activated_child();
        return;
    }
    not_activated();
    activated_here();
    bad_descriptors_are_refused();
    notify();
    with_systemd_socket_activate();
    linger_socket_activated();
    linger_refuses_a_tls_listener_without_a_certificate();
    linger_under_systemd_socket_activate();
    linger_notifies_ready_reloading_stopping();
    linger_workers_activated_and_notifying();
    println!("systemd: all passed");
}

fn set(vars: &[(&str, &str)]) {
    for (name, value) in vars {
        // SAFETY: this binary has one thread (see the module comment).
        unsafe { std::env::set_var(name, value) };
    }
}

fn env_is_clear() -> bool {
    ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"].iter().all(|v| std::env::var_os(v).is_none())
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Move descriptors to 3, 4, ... in order, as the manager's fork and exec
/// would have (dup2 leaves the copies without FD_CLOEXEC). They may already
/// sit on those numbers, the lowest free ones, so park them high first.
fn place(fds: &[RawFd]) {
    let parked: Vec<RawFd> = fds
        .iter()
        .map(|&fd| {
            // SAFETY: duplicate a descriptor we own to a free one >= 100,
            // then close the original.
            unsafe {
                let high = libc::fcntl(fd, libc::F_DUPFD, 100);
                assert!(high >= 100, "F_DUPFD");
                libc::close(fd);
                high
            }
        })
        .collect();
    for (i, high) in parked.into_iter().enumerate() {
        let target = 3 + i as RawFd;
        assert!(!is_open(target), "descriptor {target} is already in use in this test process");
        // SAFETY: dup2 onto a free descriptor, then close the parked copy.
        unsafe {
            assert_eq!(libc::dup2(high, target), target);
            libc::close(high);
        }
    }
}

/// Move a descriptor we keep above the low numbers `place` fills.
fn out_of_the_way<T: IntoRawFd + From<OwnedFd>>(x: T) -> T {
    let fd = x.into_raw_fd();
    // SAFETY: duplicate a descriptor we own to a free one >= 100, close the
    // original, and own the copy.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
        assert!(high >= 100, "F_DUPFD_CLOEXEC");
        libc::close(fd);
        T::from(OwnedFd::from_raw_fd(high))
    }
}

fn not_activated() {
    assert!(env_is_clear(), "run without LISTEN_* in the environment");
    assert_eq!(systemd::inherited_listeners().map(|v| v.len()), Ok(0));
    // Meant for another process (our parent, say): ignored, and cleared.
    let other = (std::process::id() + 1).to_string();
    set(&[("LISTEN_PID", &other), ("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "tls")]);
    assert_eq!(systemd::inherited_listeners().map(|v| v.len()), Ok(0));
    assert!(env_is_clear(), "variables for another pid are removed too");
    println!("PASS: no activation, or activation for another pid, gives no listeners");
}

fn activated_here() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpListener::bind("[::1]:0").or_else(|_| TcpListener::bind("127.0.0.1:0")).unwrap();
    let addrs = [a.local_addr().unwrap(), b.local_addr().unwrap(), c.local_addr().unwrap()];
    // std's listeners are blocking: check the flag gets set.
    place(&[a.into_raw_fd(), b.into_raw_fd(), c.into_raw_fd()]);
    let pid = std::process::id().to_string();
    set(&[("LISTEN_PID", &pid), ("LISTEN_FDS", "3"), ("LISTEN_FDNAMES", "http:tls:https")]);
    let got = systemd::inherited_listeners().unwrap();
    assert!(env_is_clear(), "LISTEN_* removed so children do not inherit them");
    assert_eq!(got.iter().map(|l| l.fd.as_raw_fd()).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(got.iter().map(|l| l.addr).collect::<Vec<_>>(), addrs);
    assert_eq!(got.iter().map(|l| l.tls).collect::<Vec<_>>(), [false, true, true]);
    for l in &got {
        let fd = l.fd.as_raw_fd();
        // SAFETY: fcntl reads flags of a descriptor the Vec owns.
        let (fd_flags, fl_flags) = unsafe { (libc::fcntl(fd, libc::F_GETFD), libc::fcntl(fd, libc::F_GETFL)) };
        assert!(fd_flags & libc::FD_CLOEXEC != 0, "fd {fd} close-on-exec");
        assert!(fl_flags & libc::O_NONBLOCK != 0, "fd {fd} non-blocking");
    }
    // A second call finds nothing: the descriptors cannot be owned twice.
    assert_eq!(systemd::inherited_listeners().map(|v| v.len()), Ok(0));
    // They are usable listeners.
    let mut client = TcpStream::connect(addrs[1]).unwrap();
    let listener = TcpListener::from(got.into_iter().nth(1).unwrap().fd);
    let (mut conn, _) = accept_within(&listener, Duration::from_secs(5));
    conn.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    drop((listener, conn, client));
    assert!(!is_open(3) && !is_open(4) && !is_open(5), "dropping an Inherited closes its descriptor");
    println!("PASS: three inherited listeners: addresses, names, CLOEXEC, O_NONBLOCK, env cleared, accept works");
}

fn accept_within(listener: &TcpListener, limit: Duration) -> (TcpStream, SocketAddr) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok(pair) => {
                pair.0.set_nonblocking(false).unwrap();
                return pair;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn expect_error(fds: &str, names: Option<&str>, want: &str) {
    let pid = std::process::id().to_string();
    set(&[("LISTEN_PID", &pid), ("LISTEN_FDS", fds)]);
    if let Some(names) = names {
        set(&[("LISTEN_FDNAMES", names)]);
    }
    let e = systemd::inherited_listeners().unwrap_err();
    assert!(e.contains(want), "error {e:?} should mention {want:?}");
    assert!(!e.contains('\n'), "one line: {e:?}");
    assert!(env_is_clear(), "cleared on error too");
    println!("PASS: refused: {e}");
}

fn bad_descriptors_are_refused() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    place(&[udp.into_raw_fd()]);
    expect_error("1", Some("http"), "descriptor 3 (http): not a stream socket");
    assert!(!is_open(3), "an error closes what was taken");

    let l = out_of_the_way(TcpListener::bind("127.0.0.1:0").unwrap());
    let stream = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    place(&[stream.into_raw_fd()]);
    expect_error("1", None, "descriptor 3 (unnamed): not listening");

    let dir = std::env::temp_dir().join(format!("linger-activation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let unix = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
    place(&[unix.into_raw_fd()]);
    expect_error("1", None, "not a TCP socket (a Unix domain socket)");
    let _ = std::fs::remove_dir_all(&dir);

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    place(&[l.into_raw_fd()]);
    expect_error("2", None, "descriptor 4 is not open");
    assert!(!is_open(3));

    expect_error("2", Some("http"), "LISTEN_FDNAMES has 1 names for LISTEN_FDS=2");
    set(&[("LISTEN_PID", &std::process::id().to_string()), ("LISTEN_FDS", "0")]);
    assert_eq!(systemd::inherited_listeners().map(|v| v.len()), Ok(0));
    assert!(env_is_clear());
    expect_error("two", None, "LISTEN_FDS=two is not a number");
    expect_error("99999999999", None, "out of range");
}

fn notify() {
    assert!(!Notifier::from_env().unwrap().is_enabled(), "no NOTIFY_SOCKET: a no-op notifier");
    Notifier::from_env().unwrap().ready().unwrap();

    let dir = std::env::temp_dir().join(format!("linger-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    set(&[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let n = Notifier::from_env().unwrap();
    n.ready().unwrap();
    n.stopping().unwrap();
    let mut buf = [0u8; 64];
    let len = manager.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"READY=1");
    let len = manager.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"STOPPING=1");
    let _ = std::fs::remove_dir_all(&dir);

    let name = format!("linger-notify-test-{}", std::process::id());
    {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        manager.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        set(&[("NOTIFY_SOCKET", &format!("@{name}"))]);
        Notifier::from_env().unwrap().ready().unwrap();
        let len = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }
    set(&[("NOTIFY_SOCKET", "not/absolute")]);
    assert!(Notifier::from_env().unwrap_err().starts_with("NOTIFY_SOCKET=not/absolute"));
    // SAFETY: one thread, as above.
    unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    println!("PASS: READY=1 and STOPPING=1 over a path and an abstract NOTIFY_SOCKET");
}

/// Started by systemd-socket-activate: report what was inherited on
/// stdout, one line per listener, then greet the connection that woke us.
fn activated_child() {
    let got = match systemd::inherited_listeners() {
        Ok(got) => got,
        Err(e) => {
            println!("error {e}");
            return;
        }
    };
    println!("env-cleared {}", env_is_clear());
    for l in &got {
        println!("listener {} {} tls={}", l.fd.as_raw_fd(), l.addr, l.tls);
    }
    std::io::stdout().flush().unwrap();
    if let Some(first) = got.into_iter().next() {
        let listener = TcpListener::from(first.fd);
        let (mut conn, _) = accept_within(&listener, Duration::from_secs(10));
        let _ = conn.write_all(b"activated\n");
    }
}

fn with_systemd_socket_activate() {
    let tool = ["/usr/bin/systemd-socket-activate", "/lib/systemd/systemd-activate"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(tool) = tool else {
        println!("SKIP: systemd-socket-activate is not installed (Debian: systemd)");
        return;
    };
    // Two free ports (a small race with other processes on this host;
    // a clash shows as the tool failing to bind, not as a wrong result).
    let ports: Vec<u16> =
        (0..2).map(|_| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let me = std::env::current_exe().unwrap();
    let child = Command::new(tool)
        .args(["-l", &format!("127.0.0.1:{}", ports[0]), "-l", &format!("127.0.0.1:{}", ports[1])])
        .arg("--fdname=http:tls")
        .arg(&me)
        .arg(CHILD_FLAG)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It execs the service on the first connection.
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = TcpStream::connect(("127.0.0.1", ports[0])) {
            client = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut client = client.expect("systemd-socket-activate did not listen");
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = String::new();
    BufReader::new(&mut client).read_line(&mut greeting).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "env-cleared true\nlistener 3 127.0.0.1:{} tls=false\nlistener 4 127.0.0.1:{} tls=true\n",
        ports[0], ports[1]
    );
    assert_eq!(stdout, want, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(greeting, "activated\n");
    println!("PASS: under systemd-socket-activate --fdname=http:tls: {}", stdout.trim().replace('\n', "; "));
}

// ---- linger itself ----------------------------------------------------------

const LINGER: &str = env!("CARGO_BIN_EXE_linger");

/// Start linger with `listener` at descriptor 3 and `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES` set for the child's own pid: the
/// variables are set between fork and exec, the only place the pid is
/// known (this binary has one thread, so the child may allocate).
fn spawn_activated(listener: &TcpListener, name: &'static str, args: &[&str]) -> Child {
    spawn_activated_notifying(listener, name, args, None)
}

/// As `spawn_activated`, with `NOTIFY_SOCKET` set to `notify` if given.
fn spawn_activated_notifying(
    listener: &TcpListener,
    name: &'static str,
    args: &[&str],
    notify: Option<&std::path::Path>,
) -> Child {
    use std::os::unix::ffi::OsStrExt;
    let notify = notify.map(|p| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap());
    let fd = listener.as_raw_fd();
    assert!(fd > 3, "dup2 onto itself would keep FD_CLOEXEC");
    let mut cmd = Command::new(LINGER);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child of a single-threaded
    // process: dup2, getpid and setenv (std then execs with `environ`,
    // since no variable was set through `Command::env`).
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) != 3 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = std::ffi::CString::new(libc::getpid().to_string()).unwrap();
            let names = std::ffi::CString::new(name).unwrap();
            libc::setenv(c"LISTEN_PID".as_ptr(), pid.as_ptr(), 1);
            libc::setenv(c"LISTEN_FDS".as_ptr(), c"1".as_ptr(), 1);
            libc::setenv(c"LISTEN_FDNAMES".as_ptr(), names.as_ptr(), 1);
            if let Some(path) = &notify {
                libc::setenv(c"NOTIFY_SOCKET".as_ptr(), path.as_ptr(), 1);
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn linger")
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    line
}

fn get_hello(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn terminate(mut child: Child) -> i32 {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "linger did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn linger_socket_activated() {
    let listener = out_of_the_way(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    // No --listen: the default (127.0.0.1:8080) must not be bound either.
    let mut child = spawn_activated(&listener, "http", &[]);
    drop(listener);
    let line = first_line(&mut child);
    assert_eq!(line, format!("listening on http://{addr}\n"), "the inherited listener, and only it");
    let response = get_hello(addr);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n") && response.ends_with("Hello, World!"), "{response}");
    let mut stdout = child.stdout.take().unwrap();
    assert_eq!(terminate(child), 0);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap_or_default();
    assert!(!rest.contains("listening on"), "one listener only: {rest:?}");
    println!("PASS: linger socket-activated (descriptor 3, LISTEN_PID its own): serves on {addr}");
}

fn linger_refuses_a_tls_listener_without_a_certificate() {
    let listener = out_of_the_way(TcpListener::bind("127.0.0.1:0").unwrap());
    let child = spawn_activated(&listener, "tls", &[]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("linger: ") && stderr.contains("--tls-cert"), "{stderr}");
    println!("PASS: an inherited TLS listener without --tls-cert: exit 2, {}", stderr.trim());
}

fn linger_under_systemd_socket_activate() {
    let Some(tool) = ["/usr/bin/systemd-socket-activate", "/lib/systemd/systemd-activate"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        println!("SKIP: systemd-socket-activate is not installed (Debian: systemd)");
        return;
    };
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(tool)
        .args(["-l", &addr.to_string(), "--fdname=http", LINGER])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tool listens, and execs linger (keeping its pid) on the first
    // connection.
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr) {
            stream = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = stream.expect("systemd-socket-activate did not listen");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert_eq!(first_line(&mut child), format!("listening on http://{addr}\n"));
    assert_eq!(terminate(child), 0);
    println!("PASS: linger under systemd-socket-activate --fdname=http serves on {addr}");
}

fn linger_notifies_ready_reloading_stopping() {
    let dir = std::env::temp_dir().join(format!("linger-notify-linger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = support::tls::Pki::new("notify");
    let path = dir.join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut child = Command::new(LINGER)
        .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&pki.cert_path)
        .arg("--tls-key")
        .arg(&pki.key_path)
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut next = || {
        let len = manager.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..len]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    let addr: SocketAddr = first_line(&mut child).trim().strip_prefix("listening on http://").unwrap().parse().unwrap();
    assert!(get_hello(addr).starts_with("HTTP/1.1 200 OK"), "serving once READY=1 is sent");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let reloading = next();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading:?}");
    assert_eq!(next(), "READY=1", "after the reload");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(next(), "STOPPING=1");
    assert_eq!(terminate(child), 0);
    let _ = std::fs::remove_dir_all(&dir);
    println!("PASS: linger sends READY=1, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM");
}

/// `--workers 2` under socket activation: the supervisor takes the
/// inherited listener (and binds nothing else), its workers serve on it,
/// and the supervisor, the main process systemd listens to, alone says
/// READY=1 (once), RELOADING=1 and READY=1 on SIGHUP, STOPPING=1 on
/// SIGTERM: a worker that notified too would break the sequence.
fn linger_workers_activated_and_notifying() {
    let dir = std::env::temp_dir().join(format!("linger-notify-workers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let listener = out_of_the_way(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let mut child = spawn_activated_notifying(&listener, "http", &["--workers", "2"], Some(&path));
    drop(listener);
    let mut buf = [0u8; 256];
    let mut next = || {
        let len = manager.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..len]).into_owned()
    };
    assert_eq!(first_line(&mut child), format!("listening on http://{addr}\n"), "the inherited listener only");
    assert_eq!(next(), "READY=1");
    for _ in 0..4 {
        let response = get_hello(addr);
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let reloading = next();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading:?}");
    assert_eq!(next(), "READY=1", "after the reload");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(next(), "STOPPING=1");
    let mut stdout = child.stdout.take().unwrap();
    assert_eq!(terminate(child), 0);
    manager.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(manager.recv(&mut buf).is_err(), "nothing more: the workers never notify");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap_or_default();
    assert!(!rest.contains("listening on"), "one listener only: {rest:?}");
    let _ = std::fs::remove_dir_all(&dir);
    println!("PASS: linger --workers 2 socket-activated on {addr}: supervisor alone sends READY, RELOADING, STOPPING");
}

//! Dropping root for real: each drop runs in a forked child (it changes the
//! whole process for good) that reports through a pipe and its exit
//! status. Only root can drop privileges, so as another user the test
//! checks that the drop is refused and skips the rest.
//!
//! A binary of its own without the test harness (`harness = false`), so
//! that `fork` happens while `main` is the only thread: the child may then
//! use the allocator and the user database (locks another thread held at
//! the fork would stay locked in the child).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linger::privileges::{drop_to, is_root, lookup_group, lookup_user};

fn main() {
    let nobody = lookup_user("nobody").expect("Debian has a nobody user");
    linger_refuses_bad_users();
    if !is_root() {
        // SAFETY: getuid(2) cannot fail.
        let me = unsafe { libc::getuid() };
        let other = if me == nobody.uid { "daemon" } else { "nobody" };
        let e = drop_to(other, None).unwrap_err();
        assert!(e.starts_with(&format!("cannot switch to {other}: ")), "{e}");
        println!("PASS: not root: drop refused ({e})");
        if me == nobody.uid {
            drop_to("nobody", None).expect("already nobody: nothing to change");
            println!("PASS: already nobody: --user nobody is accepted");
        }
        println!("SKIP: the drop itself (and linger --user) needs root; run this test as root to exercise it");
        return;
    }

    // A file only root may read, to show the child is no longer root.
    let secret = std::env::temp_dir().join(format!("linger-privileges-{}", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&secret);
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&secret).unwrap();
    }

    // nobody with the groups the database gives it.
    let report = in_child(|| {
        drop_to("nobody", None)?;
        ids_are(nobody.uid, nobody.gid)?;
        let groups = groups();
        if groups.contains(&0) {
            return Err(format!("root's group survived: {groups:?}"));
        }
        if std::fs::File::open(&secret).is_ok() {
            return Err("still reads a root-only file".into());
        }
        Ok(format!("uid {} gid {} groups {groups:?}", nobody.uid, nobody.gid))
    });
    println!("PASS: dropped to nobody: {}", report.expect("drop to nobody"));

    // nobody with one named group only.
    let group = ["nogroup", "nobody"].into_iter().find(|g| lookup_group(g).is_ok()).expect("a nobody group");
    let gid = lookup_group(group).unwrap();
    let report = in_child(|| {
        drop_to("nobody", Some(group))?;
        ids_are(nobody.uid, gid)?;
        let groups = groups();
        if groups != [gid] {
            return Err(format!("supplementary groups {groups:?}, want [{gid}]"));
        }
        Ok(format!("groups {groups:?}"))
    });
    println!("PASS: dropped to nobody:{group}: {}", report.expect("drop to nobody:group"));

    // Once dropped there is no way back, nor anywhere else.
    let report = in_child(|| {
        drop_to("nobody", None)?;
        // SAFETY: no memory involved; the failure is the point.
        if unsafe { libc::setuid(0) } == 0 {
            return Err("setuid(0) succeeded after the drop".into());
        }
        match drop_to("daemon", None) {
            Ok(()) => Err("switched again, to daemon".into()),
            Err(e) => Ok(e),
        }
    });
    println!("PASS: setuid(0) fails after the drop, and so does a second switch: {}", report.expect("no way back"));

    // A half-done switch that kept root as the saved uid is refused.
    let report = in_child(|| {
        // SAFETY: no memory involved.
        if unsafe { libc::setresuid(nobody.uid, nobody.uid, 0) } != 0 {
            return Err("setresuid".into());
        }
        match drop_to("nobody", None) {
            Ok(()) => Err("accepted a saved uid of 0".into()),
            Err(e) => Ok(e),
        }
    });
    println!("PASS: saved uid 0 refused: {}", report.expect("saved uid 0"));

    // Errors change nothing and read as one line.
    for (user, group, want) in [
        ("root", None, "refusing to serve as root"),
        ("no-such-user-here", None, "no such user"),
        ("nobody", Some("no-such-group-here"), "no such group"),
    ] {
        let e = drop_to(user, group).unwrap_err();
        assert!(e.contains(want) && !e.contains('\n'), "{e}");
        assert!(is_root(), "a refused drop leaves the process as it was");
        println!("PASS: refused: {e}");
    }
    let _ = std::fs::remove_file(&secret);
    linger_serves_as(&nobody, None);
    linger_serves_as(&nobody, Some(group));
    linger_workers_serve_as(&nobody);
    linger_exits_when_the_drop_fails();
    println!("privileges: all passed");
}

/// Run `f` in a forked child; its `Ok` text or `Err` text comes back
/// through a pipe, and the exit status says which.
fn in_child(f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fork(2) with one thread in the process (see the module
    // comment); the child only runs `f`, writes, and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let (code, text) = match f() {
            Ok(t) => (0, t),
            Err(t) => (1, t),
        };
        // SAFETY: write(2) from a live buffer; _exit(2) skips the parent's
        // atexit handlers and buffered stdout, which belong to the parent.
        unsafe {
            libc::write(fds[1], text.as_ptr().cast(), text.len());
            libc::_exit(code);
        }
    }
    // SAFETY: the parent owns both ends; close the write end so the read
    // ends at the child's exit.
    let mut read = unsafe {
        libc::close(fds[1]);
        std::fs::File::from(OwnedFd::from_raw_fd(fds[0]))
    };
    let mut text = String::new();
    read.read_to_string(&mut text).unwrap();
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status}");
    if libc::WEXITSTATUS(status) == 0 { Ok(text) } else { Err(text) }
}

fn ids_are(uid: libc::uid_t, gid: libc::gid_t) -> Result<(), String> {
    // SAFETY: the get*id calls cannot fail.
    let ids = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid(), libc::getegid()) };
    if ids == (uid, uid, gid, gid) { Ok(()) } else { Err(format!("ids {ids:?}, want uid {uid} gid {gid}")) }
}

fn groups() -> Vec<libc::gid_t> {
    let mut list = [0 as libc::gid_t; 256];
    // SAFETY: getgroups(2) writes at most 256 entries into a live array.
    let n = unsafe { libc::getgroups(list.len() as libc::c_int, list.as_mut_ptr()) };
    list[..n.max(0) as usize].to_vec()
}

// ---- linger --user ----------------------------------------------------------

const LINGER: &str = env!("CARGO_BIN_EXE_linger");

/// `--user` naming nobody real, or root: one line, exit 2, nothing bound.
fn linger_refuses_bad_users() {
    for (user, want) in [
        ("no-such-user-here", "no such user"),
        ("nobody:no-such-group-here", "no such group"),
        ("root", "refusing to serve as root"),
    ] {
        let out = Command::new(LINGER).args(["--listen", "127.0.0.1:0", "--user", user]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--user {user}: {stderr}");
        assert!(stderr.starts_with("linger: ") && stderr.contains(want) && stderr.lines().count() == 1, "{stderr}");
        assert!(out.stdout.is_empty(), "nothing listened: {:?}", String::from_utf8_lossy(&out.stdout));
        println!("PASS: linger --user {user}: exit 2, {}", stderr.trim());
    }
}

/// The ids of /proc/PID/status's `Uid:` or `Gid:` line: real, effective,
/// saved, file system.
fn proc_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().map(|v| v.parse().unwrap()).collect()
}

/// Started as root with `--user nobody[:GROUP]`: while it serves, every
/// id in /proc/PID/status is nobody's, and root's group is gone.
fn linger_serves_as(nobody: &linger::privileges::User, group: Option<&str>) {
    let target = match group {
        Some(g) => format!("nobody:{g}"),
        None => "nobody".to_string(),
    };
    let gid = group.map_or(nobody.gid, |g| lookup_group(g).unwrap());
    let listen = "127.0.0.1:0";
    let mut child = Command::new(LINGER)
        .args(["--listen", listen, "--user", &target])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("listening on http://").expect(&line).parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&buf[..n]));
    // Checked while it serves: the connection above is still open.
    let pid = child.id();
    assert_eq!(proc_ids(pid, "Uid:"), [nobody.uid; 4], "Uid line");
    assert_eq!(proc_ids(pid, "Gid:"), [gid; 4], "Gid line");
    let groups = proc_ids(pid, "Groups:");
    assert!(!groups.contains(&0), "root's group survived: {groups:?}");
    if group.is_some() {
        assert_eq!(groups, [gid], "only the named group");
    }
    drop(s);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "linger did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    println!(
        "PASS: linger --listen {listen} --user {target} serves on {addr} as uid {} gid {gid}, groups {groups:?}",
        nobody.uid
    );
}

/// The live children of `pid` (from every /proc/N/status's `PPid:`).
fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(n) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{n}/status")) else { continue };
        if status.lines().any(|l| l.strip_prefix("PPid:").is_some_and(|v| v.trim() == pid.to_string())) {
            kids.push(n);
        }
    }
    kids
}

/// `--workers 2 --user nobody`: the supervisor binds as root, drops, then
/// forks; it and both workers run as nobody, and the workers serve.
fn linger_workers_serve_as(nobody: &linger::privileges::User) {
    let mut child = Command::new(LINGER)
        .args(["--listen", "127.0.0.1:0", "--workers", "2", "--user", "nobody"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("listening on http://").expect(&line).parse().unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let workers = loop {
        let kids = children_of(pid);
        if kids.len() == 2 {
            break kids;
        }
        assert!(Instant::now() < deadline, "two workers did not start: {kids:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    }
    for p in std::iter::once(pid).chain(workers.iter().copied()) {
        assert_eq!(proc_ids(p, "Uid:"), [nobody.uid; 4], "Uid line of {p}");
        assert_eq!(proc_ids(p, "Gid:"), [nobody.gid; 4], "Gid line of {p}");
        assert!(!proc_ids(p, "Groups:").contains(&0), "root's group survived in {p}");
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "linger did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    println!("PASS: linger --workers 2 --user nobody: supervisor {pid} and workers {workers:?} all uid {}", nobody.uid);
}

/// A drop that fails (here: not root any more, so switching to daemon is
/// refused) ends the start-up with one line and exit 1, after binding and
/// before serving anything.
fn linger_exits_when_the_drop_fails() {
    let report = in_child(|| {
        drop_to("nobody", None)?;
        let out = Command::new(LINGER)
            .args(["--listen", "127.0.0.1:0", "--user", "daemon"])
            .output()
            .map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let last = stderr.lines().last().unwrap_or_default().to_string();
        if out.status.code() != Some(1) || !last.starts_with("linger: cannot switch to daemon") {
            return Err(format!("exit {:?}, stderr {stderr:?}", out.status.code()));
        }
        if !out.stdout.is_empty() {
            return Err(format!("it listened: {:?}", String::from_utf8_lossy(&out.stdout)));
        }
        Ok(last)
    });
    println!("PASS: a failed drop is exit 1 before serving: {}", report.expect("failed drop"));
}

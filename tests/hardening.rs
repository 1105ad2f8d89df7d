//! Faults and hostile clients: graceful shutdown on SIGTERM, descriptor
//! exhaustion, clients that stop reading, slow request heads and bodies.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support::{Reader, Server, TempDir, WAIT};

#[test]
fn sigterm_finishes_in_flight_answers_held_ends_streams_closes_idle_and_exits_0() {
    let dir = TempDir::new("shutdown");
    let big: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 253) as u8).collect();
    dir.write("big.bin", &big);
    let server = Server::start(&["--root", dir.arg(), "--shutdown-timeout", "5"]);
    // In flight: a large response, only partly read so far.
    let mut in_flight = server.connect();
    in_flight.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut head = [0u8; 1024];
    in_flight.read_exact(&mut head).unwrap();
    // Idle keep-alive.
    let mut idle = server.connect();
    idle.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n").unwrap();
    let mut idle_reader = Reader::new();
    assert_eq!(idle_reader.response(&mut idle, false).unwrap().status, 206);
    // A held long poll and an event stream.
    let mut held = server.connect();
    held.write_all(b"GET /sub/news HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut stream = server.connect();
    stream.write_all(b"GET /sub/news HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut stream_reader = Reader::new();
    let r = stream_reader.response_head(&mut stream).unwrap();
    assert_eq!(r.status, 200);
    server.wait_status("held and streaming", |s| s["held"] == 1 && s["streaming"] == 1);

    server.signal(libc::SIGTERM);

    // The held long poll is answered: 204, and the connection closes.
    let mut rd = Reader::new();
    let r = rd.response(&mut held, false).unwrap();
    assert_eq!(r.status, 204);
    assert!(r.closes());
    assert!(rd.until_eof(&mut held).1.is_ok());
    // The stream ends with its last chunk, then EOF.
    assert_eq!(stream_reader.chunk(&mut stream).unwrap().as_deref(), Some(&b"retry: 2000\n\n"[..]));
    assert_eq!(stream_reader.chunk(&mut stream).unwrap(), None);
    assert!(stream_reader.until_eof(&mut stream).1.is_ok());
    // The idle connection is closed with the handshake.
    let (rest, end) = idle_reader.until_eof(&mut idle);
    assert!(rest.is_empty() && end.is_ok());
    // The in-flight response completes, byte for byte, then EOF.
    let mut rest = Vec::new();
    in_flight.read_to_end(&mut rest).unwrap();
    let mut all = head.to_vec();
    all.extend_from_slice(&rest);
    let body_at = support::find(&all, b"\r\n\r\n").unwrap() + 4;
    assert!(all[body_at..] == big[..], "in-flight body complete");

    // The clients close their ends: the server, left with nothing, exits
    // (with them still open it would wait out --shutdown-timeout).
    drop((in_flight, idle, held, stream));
    let started = Instant::now();
    assert_eq!(server.wait_exit(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4), "exited only at the shutdown timeout");
}

#[test]
fn sigint_on_an_idle_server_exits_0_at_once() {
    let server = Server::start(&[]);
    let started = Instant::now();
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The lowest descriptor number the process does not use: the kernel hands
/// out the lowest free number, and `RLIMIT_NOFILE` caps that number, not
/// how many are open. (Counting them is not the same when the process
/// inherited a descriptor with a high number from its environment.)
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

/// Set the server's soft descriptor limit (the hard one stays: raising it
/// back needs a privilege containers often lack).
fn set_nofile(pid: u32, soft: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit(2) on our own child with pointers to live structs.
    unsafe {
        assert_eq!(libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut lim), 0);
        lim.rlim_cur = soft.min(lim.rlim_max);
        let rc = libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut());
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }
}

#[test]
fn descriptor_exhaustion_refuses_without_spinning_and_recovers() {
    let server = Server::start(&[]);
    let pid = server.pid();
    let mut keep: Vec<_> = (0..5)
        .map(|_| {
            let mut s = server.connect();
            s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            Reader::new().response(&mut s, false).unwrap();
            s
        })
        .collect();
    // Lower the limit under the server's feet: no room for one more socket.
    let soft_before = 10_000;
    set_nofile(pid, lowest_free_fd(pid));
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let mut s = server.connect();
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut rd = Reader::new();
        outcomes.push(rd.response(&mut s, false).map(|r| r.status).unwrap_or(0));
    }
    assert!(outcomes.contains(&503), "refused clients are told so: {outcomes:?}");
    // While exhausted, the loop must not spin.
    let cpu_before = server.cpu_time();
    let mut waiting = server.connect();
    waiting.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let spent = server.cpu_time() - cpu_before;
    assert!(spent < Duration::from_millis(150), "CPU while exhausted: {spent:?}");
    // Descriptors come back: the server serves again.
    set_nofile(pid, soft_before);
    keep.clear();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = server.connect();
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        if Reader::new().response(&mut s, false).is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "server did not recover");
    }
    assert!(server.status()["accept_errors"] >= 1);
}

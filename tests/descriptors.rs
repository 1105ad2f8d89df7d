//! Running out of descriptors, in-process on a manual clock: newcomers are
//! refused without spinning, and once a shutdown has begun a descriptor
//! freed by a close does not leave the loop polling with a zero timeout
//! (the accept flag used to outlive the listener). One test in its own
//! binary: it lowers the whole process's descriptor limit.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::driven::Driven;

/// The lowest descriptor number not in use: what a new one would get.
fn lowest_free_fd() -> u64 {
    let probe = std::fs::File::open("/dev/null").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&probe);
    fd as u64
}

fn set_nofile(limit: u64) {
    let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: setrlimit with a pointer to a live struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

#[test]
fn out_of_descriptors_refuses_then_a_shutdown_does_not_spin() {
    let mut d = Driven::start(&["--linger-timeout", "1"]);
    // The clients connect first, while descriptors are plenty: they wait
    // in the backlog. (Client and server share this process's descriptor
    // table; connecting after the limit is lowered would race the client
    // for the last descriptor against the server's accept, and Linux's
    // accept reports EMFILE before it looks at the queue, so the server
    // can run out with nobody waiting.)
    let clients: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(d.server.local_addr()).unwrap()).collect();
    // Room for a few connections above what is open now (the server's own
    // descriptors included); the server raised its soft limit to the hard
    // one at start, so both are set here.
    set_nofile(lowest_free_fd() + 4);
    d.until("an accept to fail for want of descriptors", |d| d.server.counters().accept_errors > 0);
    // The backlog still held clients when descriptors ran out: each of
    // them is answered from the reserve descriptor.
    assert!(d.server.counters().rejected >= 1, "a newcomer was answered 503 from the reserve");
    // Not spinning: nothing is accepted until a descriptor frees up.
    assert_ne!(d.server.poll_timeout(), Some(Duration::ZERO), "no busy loop while starved");

    d.server.shutdown();
    drop(clients);
    for _ in 0..20 {
        d.turn();
        assert_ne!(d.server.poll_timeout(), Some(Duration::ZERO), "a close during the drain must not re-arm accepting");
    }
    d.advance(1001);
    d.until("every connection gone", |d| d.server.finished());
}

//! Command line in, server out. Nothing else lives here.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::process::ExitCode;

use linger::board::Seat;
use linger::clock::Clock;
use linger::config::{self, Command, Config};
use linger::launch;
use linger::server::{Server, Setup};
use linger::supervisor::{self, Role};
use linger::sys;
use linger::systemd::{self, Notifier};
use linger::tls::TlsConfig;

fn main() -> ExitCode {
    // Socket activation first, before anything opens a file: descriptors
    // from 3 on are taken over as the listeners systemd passed.
    let inherited = systemd::inherited_listeners();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match config::parse(&args) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("linger {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("linger: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let listeners = match inherited {
        Ok(inherited) => match launch::activated(inherited, &cfg) {
            Ok(listeners) => listeners,
            Err(e) => {
                eprintln!("linger: {e}");
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("linger: socket activation: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = launch::check_user(&cfg) {
        eprintln!("linger: {e}");
        return ExitCode::from(2);
    }
    // A bad certificate or key is a bad argument: one line, exit 2.
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => match TlsConfig::load(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("linger: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    // sd_notify(3): READY=1 before the first poll, STOPPING=1 and
    // RELOADING=1 from the loop, or from the supervisor, which is the
    // main process systemd listens to. A malformed NOTIFY_SOCKET is not
    // worth refusing to serve over.
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        log::warn!("sd_notify: {e}");
        Notifier::default()
    });
    if cfg.workers > 1 {
        // The supervisor returns here in each forked worker too.
        return match supervisor::run(&cfg, tls, listeners, notifier) {
            Ok(Role::Exit(code)) => ExitCode::from(code),
            Ok(Role::Worker(w)) => {
                let setup = Setup { clock: Clock::system(), listeners: Some(w.listeners), tls: w.tls };
                serve(*cfg, setup, Some((w.signals, w.seat)), Notifier::default())
            }
            Err(e) => fail(&e),
        };
    }
    serve(*cfg, Setup { clock: Clock::system(), listeners, tls }, None, notifier)
}

/// Build the server and run it. A worker brings its signal pipe and its
/// seat on the status board; a single process makes its pipe, says where
/// it listens (a supervisor said it for its workers) and talks to systemd.
fn serve(cfg: Config, setup: Setup, worker: Option<(OwnedFd, Seat)>, notifier: Notifier) -> ExitCode {
    let mut server = match Server::with_setup(cfg, setup) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let single = worker.is_none();
    let signals = match worker {
        Some((signals, seat)) => {
            server.take_seat(seat);
            Ok(signals)
        }
        None => sys::signals(),
    };
    if let Err(e) = signals.and_then(|fd| server.watch_signals(fd)) {
        eprintln!("linger: signals: {e}");
        return ExitCode::from(1);
    }
    if single {
        server.set_notifier(notifier);
        let mut stdout = io::stdout();
        for &(addr, tls) in server.listening() {
            let _ = writeln!(stdout, "listening on {}://{addr}", if tls { "https" } else { "http" });
        }
        let _ = stdout.flush();
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &io::Error) -> ExitCode {
    eprintln!("linger: {e}");
    ExitCode::from(1)
}

//! Command line in, server out. Nothing else lives here.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::process::ExitCode;

use linger::board::Seat;
use linger::clock::Clock;
use linger::config::{self, Command, Config};
use linger::server::{Server, Setup};
use linger::supervisor::{self, Role};
use linger::sys;
use linger::tls::TlsConfig;

fn main() -> ExitCode {
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
    if cfg.workers > 1 {
        // The supervisor returns here in each forked worker too.
        return match supervisor::run(&cfg, tls) {
            Ok(Role::Exit(code)) => ExitCode::from(code),
            Ok(Role::Worker(w)) => {
                let setup = Setup { clock: Clock::system(), listeners: Some(w.listeners), tls: w.tls };
                serve(*cfg, setup, Some((w.signals, w.seat)))
            }
            Err(e) => fail(&e),
        };
    }
    serve(*cfg, Setup { clock: Clock::system(), listeners: None, tls }, None)
}

/// Build the server and run it. A worker brings its signal pipe and its
/// seat on the status board; a single process makes its pipe and says
/// where it listens (a supervisor said it for its workers).
fn serve(cfg: Config, setup: Setup, worker: Option<(OwnedFd, Seat)>) -> ExitCode {
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

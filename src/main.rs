//! Command line in, server out. Nothing else lives here.

use std::io::Write;
use std::process::ExitCode;

use linger::clock::Clock;
use linger::config::{self, Command};
use linger::launch;
use linger::server::{Server, Setup};
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
    let setup = Setup { clock: Clock::system(), listeners, tls };
    let mut server = match Server::with_setup(*cfg, setup) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("linger: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = sys::signals().and_then(|fd| server.watch_signals(fd)) {
        eprintln!("linger: signals: {e}");
        return ExitCode::from(1);
    }
    // sd_notify(3): READY=1 before the first poll, STOPPING=1 and
    // RELOADING=1 from the loop. A malformed NOTIFY_SOCKET is not worth
    // refusing to serve over.
    match Notifier::from_env() {
        Ok(notifier) => server.set_notifier(notifier),
        Err(e) => log::warn!("sd_notify: {e}"),
    }
    let mut stdout = std::io::stdout();
    for &(addr, tls) in server.listening() {
        let _ = writeln!(stdout, "listening on {}://{addr}", if tls { "https" } else { "http" });
    }
    let _ = stdout.flush();
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linger: {e}");
            ExitCode::from(1)
        }
    }
}

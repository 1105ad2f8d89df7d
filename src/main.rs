//! Command line in, server out. Nothing else lives here.

use std::io::Write;
use std::process::ExitCode;

use linger::clock::Clock;
use linger::config::{self, Command};
use linger::server::{Server, Setup};
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
    let setup = Setup { clock: Clock::system(), listeners: None, tls };
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

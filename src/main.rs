//! Command line in, server out. Nothing else lives here.

use std::io::Write;
use std::process::ExitCode;

use linger::config::{self, Command};
use linger::server::Server;
use linger::sys;

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
    let mut server = match Server::new(*cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("linger: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = sys::shutdown_signals().and_then(|fd| server.watch_signals(fd)) {
        eprintln!("linger: signals: {e}");
        return ExitCode::from(1);
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on http://{}", server.local_addr());
    let _ = stdout.flush();
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linger: {e}");
            ExitCode::from(1)
        }
    }
}

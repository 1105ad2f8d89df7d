//! What `main` does before the loop that is more than parsing: take the
//! listeners systemd passed (socket activation, `systemd.rs`) in the shape
//! the server binds its own (`listeners::Bound`), and check up front what
//! would otherwise fail half-way through start-up (a TLS listener without
//! a certificate, a `--user` that does not exist).
//!
//! The order of start-up, and why (README, "Deploying"):
//!
//! 1. `systemd::inherited_listeners()`, before any file is opened: the
//!    descriptors from 3 on are taken over as owned;
//! 2. the command line; `--user` looked up (a bad name is a bad argument);
//! 3. the TLS certificate and key, read as the starting user (root, when a
//!    key is root's alone);
//! 4. `Server::with_setup`: bind (or take the inherited listeners), then
//!    drop to `--user`, then open everything else (the served directory,
//!    the access log and its writer) as that user;
//! 5. signals, `READY=1` (sd_notify), the first poll.

use std::net::TcpListener;

use log::info;

use crate::config::{Config, MAX_LISTENERS};
use crate::listeners::Bound;
use crate::privileges;
use crate::systemd::Inherited;

/// The listeners socket activation passed, as the server takes them;
/// `None` when there were none (bind what the command line names).
/// Inherited listeners replace `--listen` and `--tls-listen`: the socket
/// units say where to listen. A descriptor named `tls` or `https` needs
/// `--tls-cert` and `--tls-key`; without them this is a one-line error
/// (a command line that cannot serve what it was given).
pub fn activated(inherited: Vec<Inherited>, cfg: &Config) -> Result<Option<Vec<Bound>>, String> {
    if inherited.is_empty() {
        return Ok(None);
    }
    if inherited.len() > MAX_LISTENERS {
        return Err(format!("socket activation passed {} listeners; at most {MAX_LISTENERS}", inherited.len()));
    }
    if let Some(tls) = inherited.iter().find(|l| l.tls)
        && (cfg.tls_cert.is_none() || cfg.tls_key.is_none())
    {
        return Err(format!(
            "socket activation passed a TLS listener ({}), which needs --tls-cert and --tls-key",
            tls.addr
        ));
    }
    info!("socket activation: {} listeners inherited; --listen and --tls-listen are not used", inherited.len());
    Ok(Some(inherited.into_iter().map(|l| Bound { listener: TcpListener::from(l.fd), tls: l.tls }).collect()))
}

/// `--user NAME[:GROUP]` names an account and a group that exist, and
/// not root: a bad value is one line and exit 2, before anything is bound
/// (the drop itself comes after binding, in `Server::with_setup`).
pub fn check_user(cfg: &Config) -> Result<(), String> {
    let Some(user) = &cfg.user else { return Ok(()) };
    let account = privileges::lookup_user(user).map_err(|e| format!("--user: {e}"))?;
    if account.uid == 0 {
        return Err(format!("--user {user}: that is root; refusing to serve as root"));
    }
    if let Some(group) = &cfg.group {
        privileges::lookup_group(group).map_err(|e| format!("--user: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn inherited(tls: bool) -> Inherited {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        Inherited { fd: OwnedFd::from(l), addr, tls }
    }

    #[test]
    fn none_inherited_binds_as_configured() {
        assert!(activated(Vec::new(), &Config::default()).unwrap().is_none());
    }

    #[test]
    fn inherited_listeners_keep_their_kind() {
        let cfg = Config { tls_cert: Some("c".into()), tls_key: Some("k".into()), ..Config::default() };
        let bound = activated(vec![inherited(false), inherited(true)], &cfg).unwrap().unwrap();
        assert_eq!(bound.iter().map(|b| b.tls).collect::<Vec<_>>(), [false, true]);
    }

    #[test]
    fn a_tls_listener_without_a_certificate_is_one_line() {
        let e = activated(vec![inherited(true)], &Config::default()).err().unwrap();
        assert!(e.contains("--tls-cert") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn unknown_users_and_root_are_refused_before_anything_is_bound() {
        let cfg = |user: &str, group: Option<&str>| Config {
            user: Some(user.into()),
            group: group.map(Into::into),
            ..Config::default()
        };
        assert_eq!(check_user(&cfg("no-such-user-here", None)).unwrap_err(), "--user: no such user: no-such-user-here");
        assert!(check_user(&cfg("nobody", Some("no-such-group-here"))).unwrap_err().contains("no such group"));
        assert!(check_user(&cfg("root", None)).unwrap_err().contains("refusing to serve as root"));
        assert!(check_user(&cfg("nobody", None)).is_ok());
        assert!(check_user(&Config::default()).is_ok());
    }
}

//! Dropping root after binding (`--user NAME[:GROUP]`): the listeners are
//! open, so the server no longer needs root, and a bug in the HTTP core
//! should not be able to use it. The order is the one setuid(2) and
//! setgroups(2) impose: supplementary groups and the group id while still
//! root, the user id last (after it, the others cannot be changed). Then
//! check that the way back is closed.
//!
//! Lookups use the reentrant `getpwnam_r`/`getgrnam_r` with a buffer we
//! own, never `getpwnam`'s static one.

use std::ffi::CString;
use std::io;

/// Upper bound for the lookup buffer: entries larger than this are not
/// worth supporting (glibc suggests 1 KiB, big LDAP groups need more).
const MAX_LOOKUP_BUFFER: usize = 1 << 20;

/// A user account as the drop needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    /// The primary group from the password database.
    pub gid: libc::gid_t,
}

/// Whether the effective user is root: only then can (and must) the
/// server drop privileges.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Look up a user by name in the password database (files, LDAP, ...).
pub fn lookup_user(name: &str) -> Result<User, String> {
    let cname = CString::new(name).map_err(|_| format!("user name {name:?} contains a NUL byte"))?;
    // SAFETY: passwd is plain data (integers and pointers); zeroes are a
    // valid value, overwritten by a successful lookup.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let found = lookup(&format!("user {name}"), |buf, result: &mut *mut libc::passwd| {
        // SAFETY: getpwnam_r(3) writes the entry into `pwd` and its strings
        // into `buf` (of the length given), and sets `result`.
        unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), result) }
    })?;
    if !found {
        return Err(format!("no such user: {name}"));
    }
    Ok(User { name: name.to_owned(), uid: pwd.pw_uid, gid: pwd.pw_gid })
}

/// Look up a group's id by name in the group database.
pub fn lookup_group(name: &str) -> Result<libc::gid_t, String> {
    let cname = CString::new(name).map_err(|_| format!("group name {name:?} contains a NUL byte"))?;
    // SAFETY: as for passwd above.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let found = lookup(&format!("group {name}"), |buf, result: &mut *mut libc::group| {
        // SAFETY: getgrnam_r(3), as getpwnam_r above.
        unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), result) }
    })?;
    if !found {
        return Err(format!("no such group: {name}"));
    }
    Ok(grp.gr_gid)
}

/// Run a `get*nam_r` call with a growing buffer: ERANGE means "larger",
/// EINTR "again". Returns whether an entry was found.
fn lookup<T>(
    what: &str,
    mut call: impl FnMut(&mut [libc::c_char], &mut *mut T) -> libc::c_int,
) -> Result<bool, String> {
    // SAFETY: sysconf(3) only reads a constant.
    let hint = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut len = if hint > 0 { (hint as usize).clamp(1024, MAX_LOOKUP_BUFFER) } else { 4096 };
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        let mut result: *mut T = std::ptr::null_mut();
        match call(&mut buf, &mut result) {
            0 => return Ok(!result.is_null()),
            libc::EINTR => continue,
            libc::ERANGE if len < MAX_LOOKUP_BUFFER => len *= 2,
            // getpwnam_r(3): "0 or ENOENT or ESRCH or EBADF or EPERM or ...
            // The given name or uid was not found" on some systems.
            libc::ENOENT | libc::ESRCH => return Ok(false),
            e => return Err(format!("looking up {what}: {}", io::Error::from_raw_os_error(e))),
        }
    }
}

/// Become `user` (with `group` as the only group, or else the user's
/// primary group and supplementary groups from the group database) for
/// good: `setgroups`, `setgid`, `setuid`, then prove that `setuid(0)`
/// fails. An error means the server must not serve (it may still be
/// root); errors are one line.
///
/// Call it once the listeners are bound and the files the server needs as
/// root (TLS keys, the access log) are open, before serving a request.
/// glibc applies each set*id call to every thread of the process, but
/// calling it while there is just one thread leaves nothing to doubt.
pub fn drop_to(user: &str, group: Option<&str>) -> Result<(), String> {
    let account = lookup_user(user)?;
    let gid = match group {
        Some(g) => lookup_group(g)?,
        None => account.gid,
    };
    let target = match group {
        Some(g) => format!("{user}:{g}"),
        None => user.to_owned(),
    };
    if account.uid == 0 {
        return Err(format!("--user {target}: that is root; refusing to serve as root"));
    }
    if !already(account.uid, gid) {
        become_user(&account, gid, group.is_some()).map_err(|e| {
            let hint = if is_root() { "" } else { " (not running as root)" };
            format!("cannot switch to {target}: {e}{hint}")
        })?;
    }
    verify(account.uid, gid).map_err(|e| format!("after switching to {target}: {e}"))
}

/// Already running as exactly this user and group (say, `User=` in the
/// unit and `--user` naming the same account): nothing to change, and a
/// non-root process could not change it anyway.
fn already(uid: libc::uid_t, gid: libc::gid_t) -> bool {
    let (mut r, mut e, mut s) = (0, 0, 0);
    let (mut rg, mut eg, mut sg) = (0, 0, 0);
    // SAFETY: getresuid(2)/getresgid(2) fill three live integers each.
    let ok = unsafe { libc::getresuid(&mut r, &mut e, &mut s) == 0 && libc::getresgid(&mut rg, &mut eg, &mut sg) == 0 };
    ok && [r, e, s] == [uid; 3] && [rg, eg, sg] == [gid; 3]
}

fn become_user(account: &User, gid: libc::gid_t, only_group: bool) -> Result<(), String> {
    // Supplementary groups first: root's own (0 among them, often) would
    // otherwise survive the switch, and only root may set them.
    if only_group {
        // SAFETY: setgroups(2) reads one gid from a live array.
        if unsafe { libc::setgroups(1, &gid) } != 0 {
            return Err(format!("setgroups: {}", io::Error::last_os_error()));
        }
    } else {
        let cname = CString::new(account.name.as_str()).map_err(|_| "user name contains a NUL byte".to_owned())?;
        // SAFETY: initgroups(3) reads the name and the group database and
        // calls setgroups(2); it keeps no pointer.
        if unsafe { libc::initgroups(cname.as_ptr(), gid as _) } != 0 {
            return Err(format!("initgroups: {}", io::Error::last_os_error()));
        }
    }
    // setgid(2) as root sets the real, effective and saved group ids.
    // SAFETY: no memory involved.
    if unsafe { libc::setgid(gid) } != 0 {
        return Err(format!("setgid({gid}): {}", io::Error::last_os_error()));
    }
    // setuid(2): "If the calling process is privileged, the real UID and
    // saved set-user-ID are also set", and Linux clears the permitted and
    // effective capabilities when all three leave 0. Last, since after it
    // the calls above would fail.
    // SAFETY: no memory involved.
    if unsafe { libc::setuid(account.uid) } != 0 {
        return Err(format!("setuid({}): {}", account.uid, io::Error::last_os_error()));
    }
    Ok(())
}

/// Every id is the target's, and root cannot be regained: setuid(2)
/// returns 0 for an unprivileged caller only when switching to its own
/// real or saved id, so success here means a way back exists (a saved
/// uid of 0, or a capability such as CAP_SETUID that survived).
fn verify(uid: libc::uid_t, gid: libc::gid_t) -> Result<(), String> {
    if !already(uid, gid) {
        return Err("user or group ids are not all the target's".into());
    }
    // SAFETY: no memory involved; the failure is the point.
    if unsafe { libc::setuid(0) } == 0 {
        return Err("setuid(0) succeeded, so root could be regained; refusing to serve".into());
    }
    // SAFETY: as above; root's group would open root-group files.
    if gid != 0 && unsafe { libc::setgid(0) } == 0 {
        return Err("setgid(0) succeeded; refusing to serve".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The drop itself changes the whole process, so it runs in forked
    // children in `tests/privileges.rs`; here only what changes nothing.

    #[test]
    fn nobody_is_found() {
        let nobody = lookup_user("nobody").unwrap();
        assert_eq!(nobody.name, "nobody");
        assert_ne!(nobody.uid, 0);
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup_group("root"), Ok(0));
    }

    #[test]
    fn unknown_names_are_one_line_errors() {
        let e = lookup_user("no-such-user-here").unwrap_err();
        assert_eq!(e, "no such user: no-such-user-here");
        assert_eq!(lookup_group("no-such-group-here").unwrap_err(), "no such group: no-such-group-here");
        assert!(lookup_user("a\0b").unwrap_err().contains("NUL"));
        assert!(!drop_to("no-such-user-here", None).unwrap_err().contains('\n'));
        assert!(drop_to("nobody", Some("no-such-group-here")).unwrap_err().contains("no such group"));
    }

    #[test]
    fn root_is_refused_before_anything_changes() {
        let e = drop_to("root", None).unwrap_err();
        assert!(e.contains("refusing to serve as root"), "{e}");
    }
}

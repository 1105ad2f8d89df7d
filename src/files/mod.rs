//! Static files: path cleaning and confinement to the root, MIME types, an
//! in-memory cache of metadata and small bodies with pre-rendered fields
//! (revalidated by `stat` at most once a second per file), conditional
//! requests (RFC 9110 §13) and single byte ranges (RFC 9110 §14).
//!
//! Without a root, the built-in demo site (compiled into the binary) is
//! served from the same cache, never revalidated.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::reply::{self, push_decimal, push_hex};
use crate::http::{Head, Reply, Status};
use crate::site;

mod conditional;
use conditional::{Decision, evaluate};

/// Files up to this size are kept in memory and copied into the output;
/// larger ones are sent with `sendfile` from a cached descriptor.
pub const SMALL_FILE: u64 = 64 * 1024;
/// Bound on cached small-file bodies; past it the cache starts over.
const MAX_CACHED_BYTES: usize = 64 * 1024 * 1024;
/// Bound on cache entries.
const MAX_ENTRIES: usize = 4096;
/// Bound on open descriptors the cache keeps (one per large file served):
/// counted in the server's descriptor budget (`admission::SPARE_FDS`).
pub const MAX_OPEN_FILES: usize = 256;

/// FNV-1a: request paths are short and come from a trusted cache key
/// space (only paths that resolved to files are stored), so a fast hash
/// beats SipHash here.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<V> = HashMap<Box<str>, V, BuildHasherDefault<Fnv>>;

enum Body {
    Mem(Box<[u8]>),
    File(Rc<File>),
}

/// A 200 head rendered for one value of `Date`.
#[derive(Default)]
struct Rendered {
    date: [u8; 29],
    head: Vec<u8>,
}

/// One servable file and its pre-rendered fields.
pub struct Entry {
    /// Canonical path on disk; `None` for built-in files.
    fs_path: Option<PathBuf>,
    /// Unix second of the last `stat`.
    checked: Cell<u64>,
    ino: u64,
    mtime_ns: i128,
    size: u64,
    mtime_secs: u64,
    etag: Box<[u8]>,
    last_modified: [u8; 29],
    /// `Content-Type`, `Last-Modified`, `ETag`, `Accept-Ranges` lines.
    fields: Box<[u8]>,
    /// `Content-Length` of the whole file, pre-rendered for 200s.
    full_length: Box<[u8]>,
    /// The 200 head (status line to `Content-Length`) for the current `Date`.
    rendered: RefCell<Rendered>,
    body: Body,
}

/// Why a path did not resolve to a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// The path names a directory without the trailing slash.
    Redirect(String),
    /// The path is malformed (bad escape, NUL, `..`).
    BadPath,
    /// The file exists but cannot be opened now (descriptors ran out).
    Unavailable,
}

pub struct Files {
    root: Option<PathBuf>,
    /// Request path as sent (still percent-encoded) to its entry: the fast
    /// path, one hash of the raw target.
    cache: FnvMap<Rc<Entry>>,
    /// Canonical path on disk to its entry: every spelling of one file
    /// (`/a`, `//a`, `/./a`, `/%61`) shares one entry, and one descriptor.
    files: HashMap<PathBuf, Rc<Entry>>,
    cached_bytes: usize,
    /// Entries in `files` holding a descriptor (large files), and how many
    /// may (the server's descriptor budget).
    open_files: usize,
    max_open_files: usize,
}

impl Files {
    /// Serve `root` (canonicalised), or the built-in site when `None`.
    pub fn new(root: Option<&Path>, now: SystemTime) -> io::Result<Files> {
        Files::with_open_files(root, now, MAX_OPEN_FILES)
    }

    /// As `new`, keeping at most `max_open_files` descriptors open.
    pub fn with_open_files(root: Option<&Path>, now: SystemTime, max_open_files: usize) -> io::Result<Files> {
        let root = match root {
            Some(r) => {
                let canon = fs::canonicalize(r)?;
                if !canon.is_dir() {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a directory"));
                }
                Some(canon)
            }
            None => None,
        };
        let mut files = Files {
            root,
            cache: FnvMap::default(),
            files: HashMap::new(),
            cached_bytes: 0,
            open_files: 0,
            max_open_files: max_open_files.max(1),
        };
        if files.root.is_none() {
            files.load_builtin(now);
        }
        Ok(files)
    }

    fn load_builtin(&mut self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for &(path, data) in site::FILES {
            let entry = Rc::new(Entry::new(None, 0, secs, data.len() as u64, mime_of(path), Body::Mem(data.into())));
            if let Some(dir) = path.strip_suffix("index.html") {
                self.cache.insert(dir.into(), entry.clone());
            }
            self.cache.insert(path.into(), entry);
        }
    }

    /// Find the file for a request path (raw, still percent-encoded).
    pub fn lookup(&mut self, raw: &str, now_secs: u64) -> Result<Rc<Entry>, Miss> {
        if let Some(entry) = self.cache.get(raw) {
            if entry.is_current(now_secs) {
                return Ok(entry.clone());
            }
            // Changed or gone: forget it and load afresh.
            self.forget(raw);
        }
        let Some(root) = self.root.clone() else {
            // The built-in site: the same path rules, then the decoded path.
            let (decoded, _) = resolve(Path::new("/"), raw)?;
            return decoded.to_str().and_then(|d| self.cache.get(d)).cloned().ok_or(Miss::NotFound);
        };
        let (path, is_dir_request) = resolve(&root, raw)?;
        let entry = self.load(&root, &path, is_dir_request, raw, now_secs)?;
        self.insert(raw, entry.clone());
        Ok(entry)
    }

    /// The entry for the file at `path`: shared with every other spelling
    /// that resolved to the same file, else opened.
    fn load(&mut self, root: &Path, path: &Path, is_dir_request: bool, raw: &str, now: u64) -> Result<Rc<Entry>, Miss> {
        let meta = fs::metadata(path).map_err(miss)?;
        let path = if meta.is_dir() {
            if !is_dir_request {
                return Err(Miss::Redirect(directory_location(raw)));
            }
            path.join("index.html")
        } else if is_dir_request {
            return Err(Miss::NotFound);
        } else {
            path.to_path_buf()
        };
        let canon = fs::canonicalize(&path).map_err(miss)?;
        if !canon.starts_with(root) {
            // A symlink pointing out of the root: as if it were not there.
            return Err(Miss::NotFound);
        }
        if let Some(entry) = self.files.get(&canon) {
            if entry.is_current(now) {
                return Ok(entry.clone());
            }
            self.forget_file(&canon);
        }
        if self.open_files >= self.max_open_files {
            // Crude but bounded, like the rest of the cache: start over.
            // The descriptors close as the last response using each is sent.
            self.clear();
        }
        let entry = Rc::new(open_regular(&canon, now).map_err(miss)?);
        if matches!(entry.body, Body::File(_)) {
            self.open_files += 1;
        }
        self.files.insert(canon, entry.clone());
        Ok(entry)
    }

    fn insert(&mut self, raw: &str, entry: Rc<Entry>) {
        if self.cache.len() >= MAX_ENTRIES || self.cached_bytes + entry.mem_len() > MAX_CACHED_BYTES {
            // Crude but bounded: start over. Hot files come back on the next
            // request; the working sets linger serves fit easily.
            self.clear();
        }
        self.cached_bytes += entry.mem_len();
        self.cache.insert(raw.into(), entry);
    }

    fn clear(&mut self) {
        self.cache.clear();
        self.files.clear();
        self.cached_bytes = 0;
        self.open_files = 0;
    }

    /// Drop the entry a spelling leads to, and the file's own entry.
    fn forget(&mut self, raw: &str) {
        if let Some(stale) = self.cache.remove(raw) {
            self.cached_bytes -= stale.mem_len();
            if let Some(path) = &stale.fs_path
                && self.files.get(path).is_some_and(|e| Rc::ptr_eq(e, &stale))
            {
                self.forget_file(path);
            }
        }
    }

    fn forget_file(&mut self, path: &Path) {
        if let Some(stale) = self.files.remove(path)
            && matches!(stale.body, Body::File(_))
        {
            self.open_files -= 1;
        }
    }

    /// Answer GET or HEAD for `entry`, honouring conditionals and ranges.
    pub fn respond(&self, head: &Head<'_>, entry: &Entry, reply: &mut Reply<'_>) {
        match evaluate(head, entry) {
            Decision::Full => {
                // The hot path: the whole head up to the persistence fields
                // is rendered once per second per file and copied at once.
                let mut rendered = entry.rendered.borrow_mut();
                if rendered.date != *reply.date {
                    rendered.head.clear();
                    reply::start(&mut rendered.head, Status::OK, reply.date);
                    rendered.head.extend_from_slice(&entry.fields);
                    rendered.head.extend_from_slice(&entry.full_length);
                    rendered.date = *reply.date;
                }
                reply.status = Status::OK;
                reply.out.bytes().extend_from_slice(&rendered.head);
                drop(rendered);
                reply.end_head_framed();
                entry.write_body(reply, 0, entry.size);
            }
            Decision::Partial { first, last } => {
                let buf = reply.start(Status::PARTIAL_CONTENT);
                buf.extend_from_slice(&entry.fields);
                buf.extend_from_slice(b"Content-Range: bytes ");
                push_decimal(buf, first);
                buf.push(b'-');
                push_decimal(buf, last);
                buf.push(b'/');
                push_decimal(buf, entry.size);
                buf.extend_from_slice(b"\r\n");
                let len = last - first + 1;
                reply.end_head(len);
                entry.write_body(reply, first, len);
            }
            Decision::NotModified => {
                let buf = reply.start(Status::NOT_MODIFIED);
                reply::field(buf, "ETag", &entry.etag);
                reply::field(buf, "Last-Modified", &entry.last_modified);
                reply.end_head_framed();
            }
            Decision::PreconditionFailed => reply.simple(Status::PRECONDITION_FAILED, b""),
            Decision::Unsatisfiable => {
                let mut extra = b"Content-Range: bytes */".to_vec();
                push_decimal(&mut extra, entry.size);
                extra.extend_from_slice(b"\r\n");
                reply.simple(Status::RANGE_NOT_SATISFIABLE, &extra);
            }
        }
    }
}

impl Entry {
    fn new(fs_path: Option<PathBuf>, ino: u64, mtime_secs: u64, size: u64, mime: &str, body: Body) -> Entry {
        Entry::with_mtime(fs_path, ino, i128::from(mtime_secs) * 1_000_000_000, size, mime, body, 0)
    }

    fn with_mtime(
        fs_path: Option<PathBuf>,
        ino: u64,
        mtime_ns: i128,
        size: u64,
        mime: &str,
        body: Body,
        checked: u64,
    ) -> Entry {
        let mtime_secs = u64::try_from(mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0);
        let last_modified = reply::http_date(UNIX_EPOCH + Duration::from_secs(mtime_secs));
        // nginx-style validator: modification time and size, in hex.
        let mut etag = vec![b'"'];
        push_hex(&mut etag, mtime_secs);
        etag.push(b'-');
        push_hex(&mut etag, size);
        etag.push(b'"');
        let mut fields = Vec::with_capacity(160);
        reply::field(&mut fields, "Content-Type", mime.as_bytes());
        reply::field(&mut fields, "Last-Modified", &last_modified);
        reply::field(&mut fields, "ETag", &etag);
        fields.extend_from_slice(b"Accept-Ranges: bytes\r\n");
        let mut full_length = Vec::with_capacity(32);
        reply::content_length(&mut full_length, size);
        Entry {
            fs_path,
            checked: Cell::new(checked),
            ino,
            mtime_ns,
            size,
            mtime_secs,
            etag: etag.into(),
            last_modified,
            fields: fields.into(),
            full_length: full_length.into(),
            rendered: RefCell::default(),
            body,
        }
    }

    /// Whether the entry still describes the file. The path is `stat`ed at
    /// most once a second (a file replaced by another shows there); a large
    /// file's descriptor is `fstat`ed on every use, because its size is
    /// announced before `sendfile` reads it: a file rewritten in place
    /// within the second must not be served at its old length.
    #[inline]
    fn is_current(&self, now_secs: u64) -> bool {
        if self.fs_path.is_none() {
            return true;
        }
        let path_ok = self.checked.get() == now_secs || self.unchanged_on_disk(now_secs);
        path_ok
            && match &self.body {
                Body::Mem(_) => true,
                Body::File(file) => {
                    file.metadata().is_ok_and(|m| m.len() == self.size && mtime_ns(&m) == self.mtime_ns)
                }
            }
    }

    /// `stat` the file again (at most once a second per file): if it is
    /// unchanged, stamp the entry fresh in place and keep serving it.
    fn unchanged_on_disk(&self, now_secs: u64) -> bool {
        let Some(path) = &self.fs_path else { return true };
        let same = fs::metadata(path)
            .is_ok_and(|m| m.ino() == self.ino && m.len() == self.size && mtime_ns(&m) == self.mtime_ns && m.is_file());
        if same {
            self.checked.set(now_secs);
        }
        same
    }

    fn mem_len(&self) -> usize {
        match &self.body {
            Body::Mem(b) => b.len(),
            Body::File(_) => 0,
        }
    }

    fn write_body(&self, reply: &mut Reply<'_>, off: u64, len: u64) {
        match &self.body {
            Body::Mem(bytes) => reply.body(&bytes[off as usize..(off + len) as usize]),
            Body::File(file) => reply.body_file(file.clone(), off, len),
        }
    }
}

/// Percent-decode and clean a request path, then map it under `root`.
/// Returns the path on disk and whether the request named a directory
/// (trailing slash).
fn resolve(root: &Path, raw: &str) -> Result<(PathBuf, bool), Miss> {
    let decoded = percent_decode(raw.as_bytes()).ok_or(Miss::BadPath)?;
    let mut path = root.to_path_buf();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            // Clients remove dot-segments before sending (RFC 3986 §5.2.4);
            // one that arrives is an attempt to leave the root.
            b".." => return Err(Miss::BadPath),
            _ if segment.contains(&0) || segment.contains(&b'\\') => return Err(Miss::BadPath),
            // Hidden files (.git, .env) are not published, except the
            // well-known URIs of RFC 8615.
            _ if segment.starts_with(b".") && segment != b".well-known" => {
                return Err(Miss::NotFound);
            }
            _ => path.push(std::ffi::OsStr::from_bytes(segment)),
        }
    }
    Ok((path, raw.ends_with('/')))
}

/// Open a regular file at its canonical path (symlinks resolved, confined
/// to the root by the caller). The result must be a regular file: device
/// files and FIFOs are never opened (opening a FIFO would block the loop).
fn open_regular(canon: &Path, now_secs: u64) -> io::Result<Entry> {
    let meta = fs::metadata(canon)?;
    if !meta.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(canon)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let size = meta.len();
    let body = if size <= SMALL_FILE {
        let mut data = Vec::with_capacity(size as usize);
        (&file).take(size).read_to_end(&mut data)?;
        if data.len() as u64 != size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Body::Mem(data.into())
    } else {
        Body::File(Rc::new(file))
    };
    let mime = mime_of(&canon.to_string_lossy());
    Ok(Entry::with_mtime(Some(canon.to_path_buf()), meta.ino(), mtime_ns(&meta), size, mime, body, now_secs))
}

fn mtime_ns(meta: &fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// Why a file could not be had: out of descriptors is not "not found".
fn miss(e: io::Error) -> Miss {
    if crate::sys::is_out_of_descriptors(&e) { Miss::Unavailable } else { Miss::NotFound }
}

/// Where a directory named without its trailing slash is redirected: the
/// same path cleaned of empty and `.` segments, so that `//host/dir` can
/// never become a protocol-relative `Location` that sends the client to
/// another host (an open redirect).
fn directory_location(raw: &str) -> String {
    let mut location = String::with_capacity(raw.len() + 1);
    for segment in raw.split('/').filter(|s| !s.is_empty() && *s != ".") {
        location.push('/');
        location.push_str(segment);
    }
    location.push('/');
    location
}

/// Decode %XX escapes. `None` for a malformed escape or an encoded NUL.
pub fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hi = (*raw.get(i + 1)? as char).to_digit(16)?;
            let lo = (*raw.get(i + 2)? as char).to_digit(16)?;
            let v = (hi * 16 + lo) as u8;
            if v == 0 {
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// MIME type by extension; text types name their charset.
pub fn mime_of(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    let ext = ext.to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "text" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests;

//! Tests of static files (`files/`).

use super::conditional::{Decision, RangeSpec, evaluate, parse_range};
use super::*;
use crate::http::parse::{Parsed, parse_head};

fn entry(size: u64) -> Entry {
    Entry::new(None, 1, 1_000_000, size, "text/plain", Body::Mem(vec![b'x'; size as usize].into()))
}

fn decide(req: &str, e: &Entry) -> Decision {
    match parse_head(req.as_bytes(), 8192) {
        Ok(Parsed::Head(h)) => evaluate(&h, e),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ranges() {
    assert_eq!(parse_range(b"bytes=0-9", 100), RangeSpec::Bytes(0, 9));
    assert_eq!(parse_range(b"bytes=90-", 100), RangeSpec::Bytes(90, 99));
    assert_eq!(parse_range(b"bytes=-10", 100), RangeSpec::Bytes(90, 99));
    assert_eq!(parse_range(b"bytes=-1000", 100), RangeSpec::Bytes(0, 99));
    assert_eq!(parse_range(b"bytes=50-5000", 100), RangeSpec::Bytes(50, 99));
    assert_eq!(parse_range(b"bytes=100-", 100), RangeSpec::Unsatisfiable);
    assert_eq!(parse_range(b"bytes=-0", 100), RangeSpec::Unsatisfiable);
    assert_eq!(parse_range(b"bytes=0-1,5-6", 100), RangeSpec::Ignore);
    assert_eq!(parse_range(b"bytes=9-1", 100), RangeSpec::Ignore);
    assert_eq!(parse_range(b"items=0-1", 100), RangeSpec::Ignore);
}

#[test]
fn conditional_order() {
    let e = entry(10);
    let tag = String::from_utf8(e.etag.to_vec()).unwrap();
    let lm = String::from_utf8(e.last_modified.to_vec()).unwrap();
    let base = "GET / HTTP/1.1\r\nHost: h\r\n";
    assert_eq!(decide(&format!("{base}If-None-Match: {tag}\r\n\r\n"), &e), Decision::NotModified);
    assert_eq!(decide(&format!("{base}If-None-Match: W/{tag}\r\n\r\n"), &e), Decision::NotModified);
    assert_eq!(decide(&format!("{base}If-None-Match: \"other\"\r\n\r\n"), &e), Decision::Full);
    assert_eq!(decide(&format!("{base}If-Modified-Since: {lm}\r\n\r\n"), &e), Decision::NotModified);
    // If-None-Match wins over If-Modified-Since.
    assert_eq!(decide(&format!("{base}If-None-Match: \"x\"\r\nIf-Modified-Since: {lm}\r\n\r\n"), &e), Decision::Full);
    assert_eq!(decide(&format!("{base}If-Match: \"x\"\r\n\r\n"), &e), Decision::PreconditionFailed);
    assert_eq!(decide(&format!("{base}If-Match: W/{tag}\r\n\r\n"), &e), Decision::PreconditionFailed);
    assert_eq!(decide(&format!("{base}If-Match: *\r\n\r\n"), &e), Decision::Full);
    assert_eq!(
        decide(&format!("{base}If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n"), &e),
        Decision::PreconditionFailed
    );
    assert_eq!(decide(&format!("{base}Range: bytes=2-3\r\n\r\n"), &e), Decision::Partial { first: 2, last: 3 });
    assert_eq!(decide(&format!("{base}Range: bytes=2-3\r\nIf-Range: \"old\"\r\n\r\n"), &e), Decision::Full);
    assert_eq!(
        decide(&format!("{base}Range: bytes=2-3\r\nIf-Range: {tag}\r\n\r\n"), &e),
        Decision::Partial { first: 2, last: 3 }
    );
    assert_eq!(decide(&format!("{base}Range: bytes=20-\r\n\r\n"), &e), Decision::Unsatisfiable);
    assert_eq!(decide("HEAD / HTTP/1.1\r\nHost: h\r\nRange: bytes=2-3\r\n\r\n", &e), Decision::Full);
}

#[test]
fn decoding() {
    assert_eq!(percent_decode(b"/a%20b%2F"), Some(b"/a b/".to_vec()));
    assert_eq!(percent_decode(b"/%2"), None);
    assert_eq!(percent_decode(b"/%zz"), None);
    assert_eq!(percent_decode(b"/%00"), None);
}

#[test]
fn resolve_refuses_escapes() {
    let root = Path::new("/srv");
    assert_eq!(resolve(root, "/a/../b"), Err(Miss::BadPath));
    assert_eq!(resolve(root, "/%2e%2e/etc/passwd"), Err(Miss::BadPath));
    assert_eq!(resolve(root, "/a%2f..%2fb"), Err(Miss::BadPath));
    assert_eq!(resolve(root, "/a\\b"), Err(Miss::BadPath));
    assert_eq!(resolve(root, "/.git/config"), Err(Miss::NotFound));
    // Double encoding decodes once: "%2e" is a literal file name.
    assert_eq!(resolve(root, "/%252e%252e/x"), Ok((PathBuf::from("/srv/%2e%2e/x"), false)));
    assert_eq!(resolve(root, "/d/"), Ok((PathBuf::from("/srv/d"), true)));
}

#[test]
fn directory_redirects_stay_on_this_host() {
    assert_eq!(directory_location("/dir"), "/dir/");
    assert_eq!(directory_location("//evil.example"), "/evil.example/");
    assert_eq!(directory_location("/a/./b//c"), "/a/b/c/");
}

#[test]
fn mime() {
    assert_eq!(mime_of("/a/b.HTML"), "text/html; charset=utf-8");
    assert_eq!(mime_of("/noext"), "application/octet-stream");
}

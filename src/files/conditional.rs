//! Conditional and range requests on a file (RFC 9110 §13 and §14): which
//! response a request's validators and `Range` ask for, decided from the
//! cached entry alone.

use std::time::UNIX_EPOCH;

use super::Entry;
use crate::http::Method;
use crate::http::parse::Head;

/// The outcome of RFC 9110 §13.2.2's evaluation order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Full,
    Partial { first: u64, last: u64 },
    NotModified,
    PreconditionFailed,
    Unsatisfiable,
}

pub(super) fn evaluate(head: &Head<'_>, entry: &Entry) -> Decision {
    let safe = matches!(head.method, Method::Get | Method::Head);
    // 1-2: If-Match, else If-Unmodified-Since.
    if let Some(list) = head.if_match {
        if !etag_matches(list, &entry.etag, true) {
            return Decision::PreconditionFailed;
        }
    } else if let Some(date) = head.if_unmodified_since.and_then(parse_date)
        && entry.mtime_secs > date
    {
        return Decision::PreconditionFailed;
    }
    // 3-4: If-None-Match, else If-Modified-Since (GET/HEAD only).
    if let Some(list) = head.if_none_match {
        if etag_matches(list, &entry.etag, false) {
            return if safe { Decision::NotModified } else { Decision::PreconditionFailed };
        }
    } else if let Some(date) = head.if_modified_since.filter(|_| safe).and_then(parse_date)
        && entry.mtime_secs <= date
    {
        return Decision::NotModified;
    }
    // 5: Range, for GET only, unless If-Range says the client's copy is stale.
    let Some(range) = head.range.filter(|_| head.method == Method::Get) else {
        return Decision::Full;
    };
    if let Some(validator) = head.if_range {
        let fresh = if validator.starts_with(b"\"") {
            validator == &*entry.etag
        } else {
            parse_date(validator) == Some(entry.mtime_secs)
        };
        if !fresh {
            return Decision::Full;
        }
    }
    match parse_range(range, entry.size) {
        RangeSpec::Ignore => Decision::Full,
        RangeSpec::Unsatisfiable => Decision::Unsatisfiable,
        RangeSpec::Bytes(first, last) => Decision::Partial { first, last },
    }
}

fn parse_date(value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(value).ok()?;
    let t = httpdate::parse_http_date(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// Match an `If-Match`/`If-None-Match` list against our (strong) tag.
/// `strong` comparison never matches a weak tag (RFC 9110 §8.8.3.2).
fn etag_matches(list: &[u8], etag: &[u8], strong: bool) -> bool {
    if crate::http::parse::trim(list) == b"*" {
        return true;
    }
    list.split(|&b| b == b',').map(crate::http::parse::trim).any(|tag| match tag.strip_prefix(b"W/") {
        Some(weak) => !strong && weak == etag,
        None => tag == etag,
    })
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum RangeSpec {
    /// Malformed, multiple ranges, or another unit: serve the whole file
    /// (RFC 9110 §14.2 lets a server ignore Range).
    Ignore,
    Unsatisfiable,
    Bytes(u64, u64),
}

pub(super) fn parse_range(value: &[u8], size: u64) -> RangeSpec {
    use crate::http::parse::{parse_decimal, trim};
    let value = trim(value);
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"bytes=") {
        return RangeSpec::Ignore;
    }
    let spec = trim(&value[6..]);
    if spec.contains(&b',') {
        return RangeSpec::Ignore;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeSpec::Ignore;
    };
    let (first, last) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
    if first.is_empty() {
        // suffix-range: the last N bytes.
        return match parse_decimal(last) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes(size.saturating_sub(n), size - 1),
            None => RangeSpec::Ignore,
        };
    }
    let Some(first) = parse_decimal(first) else {
        return RangeSpec::Ignore;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match parse_decimal(last) {
            Some(l) if l >= first => l,
            _ => return RangeSpec::Ignore,
        }
    };
    if first >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes(first, last.min(size - 1))
}

//! A checker for what the core writes: a sequence of well-formed HTTP/1.1
//! responses (RFC 9112 §4, §6). The property test and the fuzz target run
//! every output through it; it knows nothing of how the output was made.

/// Check `out` is a run of complete responses, optionally ending in an
/// open chunked stream (a subscription), or an HTTP/2 refusal alone.
pub fn check(out: &[u8]) -> Result<(), String> {
    let mut pos = 0;
    while pos < out.len() {
        let rest = &out[pos..];
        if pos == 0 && rest.starts_with(&[0, 0, 0, 4]) {
            // The HTTP/2 refusal (SETTINGS + GOAWAY) ends the connection.
            // Only as the first bytes: a client that has had an HTTP/1.1
            // response reads the next as one.
            return Ok(());
        }
        let head_len = find(rest, b"\r\n\r\n").ok_or_else(|| format!("incomplete head at {pos}"))? + 4;
        let head = std::str::from_utf8(&rest[..head_len]).map_err(|_| format!("head not UTF-8 at {pos}"))?;
        let mut lines = head[..head_len - 4].split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_of(status_line).ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut seen_date = false;
        for line in lines {
            let (name, value) = line.split_once(": ").ok_or_else(|| format!("bad field line {line:?}"))?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(format!("bad field name {name:?}"));
            }
            if value.bytes().any(|b| b < 0x20 && b != b'\t') {
                return Err(format!("control byte in {name}"));
            }
            match name.to_ascii_lowercase().as_str() {
                "content-length" => {
                    let n = value.parse().map_err(|_| format!("bad Content-Length {value:?}"))?;
                    if length.replace(n).is_some() {
                        return Err("two Content-Length fields".into());
                    }
                }
                "transfer-encoding" => chunked = value == "chunked",
                "date" => seen_date = true,
                _ => {}
            }
        }
        if status >= 200 && !seen_date {
            return Err(format!("{status} without Date"));
        }
        pos += head_len;
        if (100..200).contains(&status) || status == 204 || status == 304 {
            if length.is_some_and(|n| n > 0) && status != 304 {
                return Err(format!("{status} with a body length"));
            }
            continue;
        }
        match (length, chunked) {
            (Some(_), true) => return Err("both Content-Length and chunked".into()),
            (None, false) => return Err(format!("{status} without framing")),
            (Some(n), false) => {
                // A HEAD response has the length but no body: the next
                // response follows at once (no body linger writes starts
                // with a status line).
                let head_only = pos == out.len() || out[pos..].starts_with(b"HTTP/1.1 ");
                if !head_only {
                    if out.len() - pos < n {
                        return Err(format!("body shorter than Content-Length {n}"));
                    }
                    pos += n;
                }
            }
            (None, true) => {
                pos = chunks(out, pos)?;
            }
        }
    }
    Ok(())
}

/// Walk chunks from `pos`; an open stream may end mid-way through the output
/// only at a chunk boundary. Returns the position after the last chunk.
fn chunks(out: &[u8], mut pos: usize) -> Result<usize, String> {
    loop {
        if pos == out.len() {
            return Ok(pos);
        }
        let line_end = find(&out[pos..], b"\r\n").ok_or("incomplete chunk size")? + pos;
        let size_text = std::str::from_utf8(&out[pos..line_end]).map_err(|_| "chunk size not text")?;
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        pos = line_end + 2;
        if size == 0 {
            if !out[pos..].starts_with(b"\r\n") {
                return Err("last chunk without empty trailer".into());
            }
            return Ok(pos + 2);
        }
        if out.len() < pos + size + 2 || &out[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

fn status_of(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("HTTP/1.1 ")?;
    let code: u16 = rest.get(..3)?.parse().ok()?;
    (rest.as_bytes().get(3) == Some(&b' ') && (100..600).contains(&code)).then_some(code)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        let ok = b"HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 204 No Content\r\nDate: x\r\n\r\n";
        assert_eq!(check(ok), Ok(()));
        assert!(check(b"HTTP/1.1 200 OK\r\nDate: x\r\n\r\n").is_err());
        assert!(check(b"HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 5\r\n\r\nhi").is_err());
        assert!(check(b"HTTP/1.1 200 OK\r\nDate: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n").is_ok());
        assert!(check(b"HTTP/1.1 200 OK\r\nDate: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX").is_err());
        assert!(check(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(check(b"\0\0\0\x04\0\0\0\0\0").is_ok());
        let after_head = b"HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 2\r\n\r\n\0\0\0\x04\0\0\0\0\0";
        assert!(check(after_head).is_err());
    }
}

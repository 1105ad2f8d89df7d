//! The server as a newcomer meets it: through curl, with the flags people
//! actually type. Each test skips (with a note) when curl is not installed.

mod support;

use std::io::ErrorKind;
use std::process::{Command, Output};

use support::Server;

const HELLO: &str = "Hello, World!";

/// Run curl with `args`, or `None` (after printing a note) when curl is not
/// installed. Every call is bounded by `--max-time 10`; `-q` and the proxy
/// variables are cleared so the caller's ~/.curlrc or proxy settings cannot
/// route a request for 127.0.0.1 elsewhere.
fn curl(args: &[&str]) -> Option<Output> {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "--max-time", "10"]).args(args);
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(var);
    }
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            println!("note: curl not found on PATH; skipping this test");
            None
        }
        Err(e) => panic!("running curl: {e}"),
    }
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

/// curl's exit status, with its stderr when it failed.
fn assert_success(out: &Output) {
    assert!(out.status.success(), "curl exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// The response head lines curl prints in verbose mode (`< Name: value`).
fn received_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter_map(|l| l.strip_prefix("< ")).map(str::trim_end).collect()
}

/// A field's value in a list of response head lines, name matched without
/// regard to case (RFC 9110 §5.1).
fn field<'a>(lines: &[&'a str], name: &str) -> Option<&'a str> {
    lines.iter().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn curl_v_fetches_a_file() {
    let server = Server::start(&[]);
    let Some(out) = curl(&["-v", &url(&server, "/hello.txt")]) else {
        return;
    };
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let received = received_lines(&stderr);
    assert_eq!(received.first().copied(), Some("HTTP/1.1 200 OK"), "verbose output:\n{stderr}");
    assert_eq!(field(&received, "Content-Length"), Some("13"));
}

/// `curl -I` sends HEAD (RFC 9110 §9.3.2): the same fields as GET, no body,
/// including the validators and `Accept-Ranges` that make the next two
/// tests possible.
#[test]
fn curl_head_shows_length_and_validators() {
    let server = Server::start(&[]);
    let Some(out) = curl(&["-I", &url(&server, "/hello.txt")]) else {
        return;
    };
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().map(str::trim_end).collect();
    assert_eq!(lines.first().copied(), Some("HTTP/1.1 200 OK"), "curl -I printed:\n{stdout}");
    assert_eq!(field(&lines, "Content-Length"), Some("13"), "{stdout}");
    assert_eq!(field(&lines, "Accept-Ranges"), Some("bytes"), "{stdout}");
    // The validators must be the ones a GET sees, or conditional requests
    // built from a HEAD would never match.
    let via_get = server.get("/hello.txt");
    let etag = field(&lines, "ETag").unwrap_or_else(|| panic!("no ETag:\n{stdout}"));
    assert!(etag.starts_with('"') && etag.ends_with('"'), "ETag {etag:?} is not a quoted strong tag");
    assert_eq!(Some(etag), via_get.header("etag"));
    let last_modified = field(&lines, "Last-Modified").unwrap_or_else(|| panic!("no Last-Modified:\n{stdout}"));
    assert!(httpdate::parse_http_date(last_modified).is_ok(), "Last-Modified {last_modified:?} is not an HTTP-date");
    assert_eq!(Some(last_modified), via_get.header("last-modified"));
}

/// `curl --range 0-4`: a single byte range (RFC 9110 §14.2, §15.3.7).
#[test]
fn curl_range_gets_206_with_the_first_five_bytes() {
    let server = Server::start(&[]);
    let Some(out) = curl(&["-v", "--range", "0-4", &url(&server, "/hello.txt")]) else {
        return;
    };
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let received = received_lines(&stderr);
    assert_eq!(received.first().copied(), Some("HTTP/1.1 206 Partial Content"), "verbose output:\n{stderr}");
    assert_eq!(field(&received, "Content-Range"), Some("bytes 0-4/13"), "{stderr}");
    assert_eq!(field(&received, "Content-Length"), Some("5"), "{stderr}");
}

/// `curl -z DATE` sends If-Modified-Since (RFC 9110 §13.1.3). With the
/// file's own Last-Modified the answer is 304, which curl reports by
/// printing nothing and exiting 0; with an older date the body comes back.
#[test]
fn curl_z_with_last_modified_gets_304() {
    let server = Server::start(&[]);
    let last_modified = server.get("/hello.txt").header("last-modified").expect("Last-Modified").to_string();
    let target = url(&server, "/hello.txt");
    let Some(out) = curl(&["-sS", "-z", &last_modified, "-w", "%{http_code}", &target]) else {
        return;
    };
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "304", "only the -w code, no body");

    // Control: a date before the file's modification time gets the file,
    // so the 304 above really came from the condition.
    let Some(out) = curl(&["-sS", "-z", "Sat, 01 Jan 2000 00:00:00 GMT", "-w", "%{http_code}", &target]) else {
        return;
    };
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{HELLO}200"));
}

/// Several URLs in one curl command share one persistent connection
/// (RFC 9112 §9.3): curl says so, and the server's `accepted` counter
/// agrees.
#[test]
fn curl_reuses_one_connection_for_several_urls() {
    let server = Server::start(&[]);
    // `status()` opens a connection of its own, which `accepted` counts
    // as well: the one after the curl run adds 1 beyond curl's.
    let before = server.status();
    let Some(out) =
        curl(&["-v", &url(&server, "/hello.txt"), &url(&server, "/style.css"), &url(&server, "/hello.txt")])
    else {
        return;
    };
    let after = server.status();
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Re-using existing connection") || stderr.contains("Reusing existing connection"),
        "curl did not report reusing its connection:\n{stderr}"
    );
    assert_eq!(
        received_lines(&stderr).iter().filter(|l| l.starts_with("HTTP/1.1 200")).count(),
        3,
        "three 200 responses:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let css = server.get("/style.css").text();
    assert_eq!(stdout, format!("{HELLO}{css}{HELLO}"));
    assert_eq!(after["accepted"] - before["accepted"], 1 + 1, "curl's one connection plus the second status request");
    assert_eq!(after["requests"] - before["requests"], 3 + 1, "curl's three requests plus the second status request");
}

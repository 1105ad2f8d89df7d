//! The built-in demo site, compiled into the binary so that `linger` with no
//! arguments serves something. Paths are request paths; `index.html` also
//! answers for its directory.

pub static FILES: &[(&str, &[u8])] = &[
    ("/index.html", include_bytes!("../site/index.html")),
    ("/style.css", include_bytes!("../site/style.css")),
    ("/hello.txt", include_bytes!("../site/hello.txt")),
    ("/live.html", include_bytes!("../site/live.html")),
];

//! `tinytune serve`: a static file server for the playground (`www/` and its wasm bundle).
//!
//! What it does: loopback by default, the headers the page needs (cross-origin isolation, a CSP
//! that lets wasm compile but keeps every request on the page's own origin), and a path resolver
//! that never leaves the root, whatever the encoding. HTTP/1.1 GET and HEAD only, one thread per
//! connection and one request per connection (`Connection: close`): a browser opens several
//! sockets at once, some of them idle, and none of them may hold up another. (A pooled server
//! whose threads each wait on an idle keep-alive socket stalled the page's first request.)

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

/// Only the page's own origin: scripts, workers, fetches and wasm compilation.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
worker-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self'; \
font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers on every answer.
const SECURITY: [(&str, &str); 7] = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Embedder-Policy", "require-corp"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
];

/// A socket that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// The longest request head accepted (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

pub struct Server {
    listener: TcpListener,
    root: PathBuf,
}

impl Server {
    /// Bind `host:port` and serve files below `root`.
    pub fn bind(host: &str, port: u16, root: &Path) -> Result<Server> {
        let root = root.canonicalize().map_err(|e| {
            Error::input(format!(
                "cannot serve '{}': {e}. Pass the folder that holds index.html with --root",
                root.display()
            ))
        })?;
        if !root.is_dir() {
            return Err(Error::input(format!("--root '{}' is not a folder", root.display())));
        }
        let addr = format!("{host}:{port}");
        let listener = TcpListener::bind(&addr).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                Error::input(format!(
                    "cannot listen on {addr}: the port is already in use. Stop the other server \
                     or choose another port with --port"
                ))
            } else {
                Error::input(format!("cannot listen on {addr}: {e}"))
            }
        })?;
        Ok(Server { listener, root })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> String {
        self.listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|e| format!("<unknown: {e}>"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Serve until the process ends: each connection on its own thread.
    pub fn run(self) {
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            let root = self.root.clone();
            std::thread::spawn(move || {
                let _ = handle(&root, stream);
            });
        }
    }
}

/// One request: read its head, answer, close.
fn handle(root: &Path, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 {
            return Ok(()); // closed before a whole request
        }
        if head.len() > MAX_HEAD {
            return answer(stream, 431, "text/plain; charset=utf-8", Body::Text("request head too large\n"), false);
        }
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || target.is_empty() {
        return answer(stream, 400, "text/plain; charset=utf-8", Body::Text("400 malformed request line\n"), false);
    }
    let head_only = method == "HEAD";
    if !(head_only || method == "GET") {
        return answer(stream, 405, "text/plain; charset=utf-8", Body::Text("405 only GET and HEAD are served\n"), false);
    }
    match resolve(root, target) {
        Ok(path) => match std::fs::File::open(&path) {
            Ok(file) => answer(stream, 200, content_type(&path), Body::File(file), head_only),
            Err(_) => answer(stream, 404, "text/plain; charset=utf-8", Body::Text("404 not found\n"), head_only),
        },
        Err(Refusal::NotFound) => answer(stream, 404, "text/plain; charset=utf-8", Body::Text("404 not found\n"), head_only),
        Err(Refusal::Forbidden) => answer(stream, 403, "text/plain; charset=utf-8", Body::Text("403 outside the served folder\n"), head_only),
        Err(Refusal::BadRequest(why)) => answer(stream, 400, "text/plain; charset=utf-8", Body::Owned(format!("400 {why}\n")), head_only),
    }
}

enum Body {
    Text(&'static str),
    Owned(String),
    File(std::fs::File),
}

fn answer(mut stream: TcpStream, code: u16, content_type: &str, body: Body, head_only: bool) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let len = match &body {
        Body::Text(t) => t.len() as u64,
        Body::Owned(t) => t.len() as u64,
        Body::File(f) => f.metadata()?.len(),
    };
    let mut out = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    for (k, v) in SECURITY {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, &mut stream);
    w.write_all(out.as_bytes())?;
    if !head_only {
        match body {
            Body::Text(t) => w.write_all(t.as_bytes())?,
            Body::Owned(t) => w.write_all(t.as_bytes())?,
            Body::File(mut f) => {
                std::io::copy(&mut f, &mut w)?;
            }
        }
    }
    w.flush()?;
    drop(w);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// Why a request path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed: bad percent-encoding, an encoded slash or backslash, a NUL, not origin-form.
    BadRequest(&'static str),
    /// The path would leave the root (`..`, or a symlink pointing outside).
    Forbidden,
    NotFound,
}

/// Map a request target (`/a/b.js?x=1`) to a file below `root` (already canonical).
pub fn resolve(root: &Path, target: &str) -> std::result::Result<PathBuf, Refusal> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(Refusal::BadRequest("the request target must be a path starting with '/'"));
    }
    // Encoded separators are refused outright: a file name never needs one, and decoding them
    // would let a single segment smuggle a path.
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return Err(Refusal::BadRequest("encoded '/', '\\' or NUL in the path"));
    }
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| Refusal::BadRequest("the path is not valid UTF-8 after decoding"))?;
    if decoded.contains('\\') || decoded.contains('\0') {
        return Err(Refusal::BadRequest("backslash or NUL in the path"));
    }
    let mut rel = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(Refusal::Forbidden),
            s => {
                // A segment must be a plain name: this also rejects a Windows drive prefix.
                let mut comps = Path::new(s).components();
                match (comps.next(), comps.next()) {
                    (Some(Component::Normal(_)), None) => rel.push(s),
                    _ => return Err(Refusal::Forbidden),
                }
            }
        }
    }
    let mut full = root.join(&rel);
    if full.is_dir() {
        full.push("index.html");
    }
    // Symlinks are followed only while they stay inside the root.
    let real = full.canonicalize().map_err(|_| Refusal::NotFound)?;
    if !real.starts_with(root) {
        return Err(Refusal::Forbidden);
    }
    if !real.is_file() {
        return Err(Refusal::NotFound);
    }
    Ok(real)
}

pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "jsonl" | "txt" | "md" | "toml" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

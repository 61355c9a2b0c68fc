//! `tinytune serve`: a static file server for the playground (`www/` and its wasm bundle).
//!
//! What it does: loopback by default, the headers the page needs (cross-origin isolation, a CSP
//! that lets wasm compile but keeps every request on the page's own origin), and a path resolver
//! that never leaves the root, whatever the encoding. HTTP/1.1 GET and HEAD only, one thread per
//! connection and one request per connection (`Connection: close`): a browser opens several
//! sockets at once, some of them idle, and none of them may hold up another. (A pooled server
//! whose threads each wait on an idle keep-alive socket stalled the page's first request.)
//!
//! Hardened against clients that misbehave: at most [`MAX_CONNECTIONS`] at once, shedding the
//! oldest that has not sent its request yet; one deadline for the whole request head and a
//! write timeout; the head read through a bounded buffer; backoff when accepting fails; and, on
//! loopback, only loopback Host names (a site whose DNS name is rebound to 127.0.0.1 cannot
//! read the served files through the victim's browser).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

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

/// The whole request head (request line and headers) must arrive within this time, however it
/// trickles in.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// A client that takes no bytes of the answer for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Connections handled at once (one thread each). Past it, the oldest connection that has not
/// yet sent its whole request is closed to make room: idle or trickling sockets cannot starve a
/// real request.
pub const MAX_CONNECTIONS: usize = 64;

pub struct Server {
    listener: TcpListener,
    root: PathBuf,
    /// Bound to a loopback address: requests must name a loopback host (DNS-rebinding guard).
    loopback: bool,
    /// Model files offered to the page, read-only, under `/models/` (`.gguf` files only).
    models: Option<PathBuf>,
}

/// The connections being handled; those still reading their request head can be shed.
#[derive(Default)]
struct Registry {
    next: u64,
    active: usize,
    /// Connections still waiting for their request head, oldest first (ids increase).
    reading: std::collections::BTreeMap<u64, TcpStream>,
}

type Shared = std::sync::Arc<std::sync::Mutex<Registry>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks the connection done when its thread ends, however it ends.
struct Slot {
    registry: Shared,
    id: u64,
}

impl Slot {
    /// The request head is in: the connection can no longer be shed.
    fn answering(&self) {
        lock(&self.registry).reading.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut r = lock(&self.registry);
        r.reading.remove(&self.id);
        r.active -= 1;
    }
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
        let loopback = listener.local_addr().map(|a| a.ip().is_loopback()).unwrap_or(false);
        Ok(Server { listener, root, loopback, models: None })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> String {
        self.listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|e| format!("<unknown: {e}>"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Offer the `.gguf` files of `dir` under `/models/`: `/models/` lists them as JSON
    /// (`[{"name", "bytes"}]`), `/models/<name>` sends one. Nothing else in the folder is served.
    pub fn with_models(mut self, dir: Option<PathBuf>) -> Server {
        self.models = dir.filter(|d| d.is_dir());
        self
    }

    pub fn models(&self) -> Option<&Path> {
        self.models.as_deref()
    }

    /// Serve until the process ends: each connection on its own thread, at most
    /// [`MAX_CONNECTIONS`] at once.
    pub fn run(self) {
        let registry = Shared::default();
        let mut backoff = Duration::from_millis(5);
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(5);
                    stream
                }
                Err(e) => {
                    // Out of file descriptors or memory: wait rather than spin, and say so.
                    if backoff >= Duration::from_millis(640) {
                        eprintln!("tinytune serve: accepting a connection failed ({e}); retrying");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Some(slot) = admit(&registry, &stream) else { continue };
            let root = self.root.clone();
            let models = self.models.clone();
            let loopback = self.loopback;
            // A thread that cannot be started drops its slot and closes the connection.
            let _ = std::thread::Builder::new().name("tinytune-serve".into()).spawn(move || {
                let _ = handle(&root, models.as_deref(), loopback, stream, &slot);
            });
        }
    }
}

/// Take a slot for a new connection, shedding the oldest one still reading its head when all
/// are taken. `None` (the connection is dropped) only when every slot is busy answering.
fn admit(registry: &Shared, stream: &TcpStream) -> Option<Slot> {
    let mut r = lock(registry);
    if r.active >= MAX_CONNECTIONS {
        let oldest = *r.reading.keys().next()?;
        if let Some(old) = r.reading.remove(&oldest) {
            // Wakes the thread blocked reading it; that thread then frees its slot.
            let _ = old.shutdown(std::net::Shutdown::Both);
        }
    }
    let watch = stream.try_clone().ok()?;
    let id = r.next;
    r.next += 1;
    r.active += 1;
    r.reading.insert(id, watch);
    Some(Slot { registry: registry.clone(), id })
}

/// Why a request head could not be read.
enum HeadError {
    Closed,
    TooLarge,
    TimedOut,
    Io,
}

/// Read the request head, at most [`MAX_HEAD`] bytes, all of it before `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> std::result::Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream.set_read_timeout(Some(left)).map_err(|_| HeadError::Io)?;
        let room = (MAX_HEAD + 1 - head.len()).min(buf.len());
        let n = match stream.read(&mut buf[..room]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Io),
        };
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        let tail = &head[from..];
        let end = tail
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| from + i + 4)
            .or_else(|| tail.windows(2).position(|w| w == b"\n\n").map(|i| from + i + 2));
        if let Some(end) = end {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Is `host` (a Host header value, with or without a port) a loopback name?
pub fn loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(valid_port) => ip,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

const TEXT: &str = "text/plain; charset=utf-8";

/// One request: read its head, answer, close.
fn handle(root: &Path, models: Option<&Path>, loopback: bool, mut stream: TcpStream, slot: &Slot) -> std::io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let head = match read_head(&mut stream, Instant::now() + HEAD_DEADLINE) {
        Ok(head) => head,
        Err(HeadError::TooLarge) => {
            slot.answering();
            return answer(stream, 431, TEXT, Body::Text("431 request head too large\n"), false);
        }
        Err(HeadError::TimedOut) => {
            slot.answering();
            return answer(stream, 408, TEXT, Body::Text("408 the request did not arrive in time\n"), false);
        }
        Err(HeadError::Closed | HeadError::Io) => return Ok(()),
    };
    slot.answering();
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || target.is_empty() {
        return answer(stream, 400, TEXT, Body::Text("400 malformed request line\n"), false);
    }
    if loopback {
        let host = lines.find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("host").then_some(v)
        });
        match host {
            None => return answer(stream, 400, TEXT, Body::Text("400 the request has no Host header\n"), false),
            Some(h) if !loopback_host(h) => {
                let why = "421 this server listens on loopback and answers only to 127.0.0.1, localhost or [::1]\n";
                return answer(stream, 421, TEXT, Body::Text(why), false);
            }
            Some(_) => {}
        }
    }
    let head_only = method == "HEAD";
    if !(head_only || method == "GET") {
        return answer(stream, 405, TEXT, Body::Text("405 only GET and HEAD are served\n"), false);
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    if let Some(name) = path.strip_prefix("/models/") {
        return match models {
            None => answer(stream, 404, TEXT, Body::Text("404 no model folder is offered (tinytune serve --models DIR)\n"), head_only),
            Some(dir) if name.is_empty() => answer(stream, 200, "application/json", Body::Owned(model_list(dir)), head_only),
            Some(dir) => match model_file(dir, name) {
                Some(file) => answer(stream, 200, "application/octet-stream", Body::File(file), head_only),
                None => answer(stream, 404, TEXT, Body::Text("404 no such model\n"), head_only),
            },
        };
    }
    match resolve(root, target) {
        Ok(path) => match std::fs::File::open(&path) {
            Ok(file) => answer(stream, 200, content_type(&path), Body::File(file), head_only),
            Err(_) => answer(stream, 404, TEXT, Body::Text("404 not found\n"), head_only),
        },
        Err(Refusal::NotFound) => answer(stream, 404, TEXT, Body::Text("404 not found\n"), head_only),
        Err(Refusal::Forbidden) => answer(stream, 403, TEXT, Body::Text("403 outside the served folder\n"), head_only),
        Err(Refusal::BadRequest(why)) => answer(stream, 400, TEXT, Body::Owned(format!("400 {why}\n")), head_only),
    }
}

/// The `.gguf` files directly in `dir`, as `[{"name", "bytes"}]`, sorted by name.
fn model_list(dir: &Path) -> String {
    let mut list: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    let meta = e.metadata().ok()?;
                    (meta.is_file() && name.to_ascii_lowercase().ends_with(".gguf")).then_some((name, meta.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    serde_json::to_string(&list.iter().map(|(n, b)| serde_json::json!({"name": n, "bytes": b})).collect::<Vec<_>>())
        .expect("a JSON list")
}

/// One listed model: a plain `.gguf` file name (percent-decoded, no separators) directly in `dir`.
fn model_file(dir: &Path, encoded: &str) -> Option<std::fs::File> {
    let name = percent_encoding::percent_decode_str(encoded).decode_utf8().ok()?;
    let plain = !name.is_empty() && !name.contains(['/', '\\', '\0']) && name != "." && name != "..";
    if !plain || !name.to_ascii_lowercase().ends_with(".gguf") {
        return None;
    }
    let path = dir.join(name.as_ref());
    // A symlink in the folder may point anywhere; only regular files are offered.
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    std::fs::File::open(path).ok()
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
        408 => "Request Timeout",
        421 => "Misdirected Request",
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

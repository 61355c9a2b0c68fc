//! `tinytune serve`: a static file server for the playground (`www/` and its wasm bundle).
//!
//! HTTP parsing is tiny_http's. What is ours is the policy: loopback by default, the headers the
//! page needs (cross-origin isolation, a CSP that lets wasm compile but keeps every request on the
//! page's own origin), and a path resolver that never leaves the root, whatever the encoding.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::{Error, Result};

/// Only the page's own origin: scripts, workers, fetches and wasm compilation.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
worker-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self'; \
font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub struct Server {
    http: Arc<tiny_http::Server>,
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
        let http = tiny_http::Server::http(&addr).map_err(|e| {
            let text = e.to_string();
            if text.to_lowercase().contains("in use") {
                Error::input(format!(
                    "cannot listen on {addr}: the port is already in use. Stop the other server \
                     or choose another port with --port"
                ))
            } else {
                Error::input(format!("cannot listen on {addr}: {text}"))
            }
        })?;
        Ok(Server { http: Arc::new(http), root })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> String {
        match self.http.server_addr() {
            tiny_http::ListenAddr::IP(a) => a.to_string(),
            #[allow(unreachable_patterns)]
            other => format!("{other:?}"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Serve until the process ends, on a few threads.
    pub fn run(self, threads: usize) {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let http = self.http.clone();
                let root = self.root.clone();
                std::thread::spawn(move || {
                    for request in http.incoming_requests() {
                        respond(&root, request);
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
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

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn respond(root: &Path, request: tiny_http::Request) {
    use tiny_http::{Method, Response};
    let security = [
        header("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        header("Cross-Origin-Opener-Policy", "same-origin"),
        header("Cross-Origin-Embedder-Policy", "require-corp"),
        header("Cross-Origin-Resource-Policy", "same-origin"),
        header("X-Content-Type-Options", "nosniff"),
        header("Referrer-Policy", "no-referrer"),
        header("Cache-Control", "no-cache"),
    ];
    let error = |code: u16, text: &str| {
        let mut r = Response::from_string(format!("{code} {text}\n")).with_status_code(code);
        r.add_header(header("Content-Type", "text/plain; charset=utf-8"));
        r
    };
    let head = *request.method() == Method::Head;
    if !(head || *request.method() == Method::Get) {
        let mut r = error(405, "only GET and HEAD are served");
        r.add_header(header("Allow", "GET, HEAD"));
        for h in security {
            r.add_header(h);
        }
        let _ = request.respond(r);
        return;
    }
    let result = match resolve(root, request.url()) {
        Ok(path) => match std::fs::File::open(&path) {
            Ok(file) => {
                let mut r = Response::from_file(file);
                r.add_header(header("Content-Type", content_type(&path)));
                for h in security {
                    r.add_header(h);
                }
                request.respond(r)
            }
            Err(_) => request.respond(with(error(404, "not found"), security)),
        },
        Err(Refusal::NotFound) => request.respond(with(error(404, "not found"), security)),
        Err(Refusal::Forbidden) => request.respond(with(error(403, "outside the served folder"), security)),
        Err(Refusal::BadRequest(why)) => request.respond(with(error(400, why), security)),
    };
    let _ = result;
}

fn with<R: std::io::Read>(
    mut r: tiny_http::Response<R>,
    headers: [tiny_http::Header; 7],
) -> tiny_http::Response<R> {
    for h in headers {
        r.add_header(h);
    }
    r
}

//! `tinytune serve`: headers, content types, and that no request reaches a file outside the
//! root, whatever the spelling of the path.

mod common;
use common::Scratch;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use tinytune::serve::Server;

struct Site {
    root: PathBuf,
    addr: String,
    _scratch: Scratch,
}

const SECRET: &str = "top-secret-outside-the-root";

/// A temp folder `<tmp>/site` with `www/` as the root, a secret beside it, and symlinks.
fn site(name: &str) -> Site {
    let base = Scratch::path(&format!("serve-{name}"));
    let root = base.join("www");
    std::fs::create_dir_all(root.join("pkg")).unwrap();
    std::fs::write(root.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    std::fs::write(root.join("pkg/m.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(root.join("app.js"), "export {}").unwrap();
    std::fs::write(base.join("secret.txt"), SECRET).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(base.join("secret.txt"), root.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink(&base, root.join("escape-dir")).unwrap();
        std::os::unix::fs::symlink(root.join("app.js"), root.join("inside.js")).unwrap();
    }
    let server = Server::bind("127.0.0.1", 0, &root).unwrap();
    let addr = server.local_addr();
    std::thread::spawn(move || server.run());
    Site { root, addr, _scratch: base }
}

/// Send a raw request line, exactly as written (like `curl --path-as-is`).
fn raw_get(addr: &str, target: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn serves_files_with_isolation_headers_and_a_same_origin_csp() {
    let site = site("headers");
    let (code, head, body) = raw_get(&site.addr, "/");
    assert_eq!(code, 200, "{head}");
    assert!(body.contains("<title>t</title>"));
    assert_eq!(header(&head, "Cross-Origin-Opener-Policy"), Some("same-origin"));
    assert_eq!(header(&head, "Cross-Origin-Embedder-Policy"), Some("require-corp"));
    let csp = header(&head, "Content-Security-Policy").expect("CSP header");
    assert!(csp.contains("'wasm-unsafe-eval'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'self'"), "{csp}");

    let (code, head, _) = raw_get(&site.addr, "/pkg/m.wasm");
    assert_eq!(code, 200);
    assert_eq!(header(&head, "Content-Type"), Some("application/wasm"));
    let (_, head, _) = raw_get(&site.addr, "/app.js?v=1");
    assert!(header(&head, "Content-Type").unwrap().starts_with("text/javascript"));
    let (code, _, _) = raw_get(&site.addr, "/missing.js");
    assert_eq!(code, 404);
}

#[test]
fn never_serves_a_file_outside_the_root() {
    let site = site("traversal");
    let attempts = [
        "/../secret.txt",
        "/../../etc/passwd",
        "/pkg/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/.%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/%252e%252e/secret.txt",
        "//etc/passwd",
        "/etc/passwd",
        "http://evil.example/../secret.txt",
        "/escape.txt",
        "/escape-dir/secret.txt",
        "/pkg/%00/../../secret.txt",
    ];
    for target in attempts {
        let (code, head, body) = raw_get(&site.addr, target);
        assert!(!body.contains(SECRET), "{target} leaked the secret:\n{head}");
        assert!(!body.contains("root:x:0:0"), "{target} leaked /etc/passwd");
        assert!((400..500).contains(&code), "{target} answered {code}");
    }
    // A symlink that stays inside the root is fine.
    let (code, _, body) = raw_get(&site.addr, "/inside.js");
    assert_eq!((code, body.as_str()), (200, "export {}"));
    assert!(site.root.exists());
}

#[test]
fn idle_sockets_do_not_hold_up_a_request() {
    // A browser opens several sockets at once and leaves some idle; a request on another must
    // still be answered at once.
    let site = site("idle");
    let idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(&site.addr).unwrap()).collect();
    let mut s = TcpStream::connect(&site.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).expect("answered within 5 s");
    assert_eq!(&buf, b"HTTP/1.1 200");
    drop(idle);
}

#[test]
fn only_get_and_head_are_served_and_head_has_no_body() {
    let site = site("methods");
    let send = |req: &str| {
        let mut s = TcpStream::connect(&site.addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        String::from_utf8_lossy(&buf).to_string()
    };
    let post = send("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"), "{post}");
    let head = send("HEAD /app.js HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("Content-Length: 9") && head.ends_with("\r\n\r\n"), "{head}");
    assert!(send("GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400"));
}

#[test]
fn binding_a_port_in_use_is_a_clear_error() {
    let site = site("busy");
    let port: u16 = site.addr.rsplit(':').next().unwrap().parse().unwrap();
    let err = Server::bind("127.0.0.1", port, &site.root).err().expect("second bind fails");
    assert!(err.to_string().contains("already in use"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_tinytune"))
        .args(["serve", "--port", &port.to_string(), "--root"])
        .arg(&site.root)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already in use") && stderr.contains("--port"), "{stderr}");
}

#[test]
fn the_cli_rejects_an_unknown_subcommand_and_has_help_for_each() {
    let bin = env!("CARGO_BIN_EXE_tinytune");
    let out = Command::new(bin).arg("frobnicate").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
    for sub in ["serve", "check"] {
        let out = Command::new(bin).args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: tinytune"));
    }
    let out = Command::new(bin).args(["serve", "--root", "/definitely/not/here"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--root"));
}

/// A normal request, timed from connect to the whole answer.
#[test]
fn a_device_check_without_a_display_prints_only_its_own_lines() {
    // With no display to ask, Mesa's device-select layer had libwayland print "error:
    // XDG_RUNTIME_DIR is invalid or not set in the environment." once per Vulkan instance, four
    // lines before the check's own (src/device.rs, `quiet_vulkan_layer_without_display`).
    let out = Command::new(env!("CARGO_BIN_EXE_tinytune"))
        .args(["check", "--device", "wgpu"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .env_remove("DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT")
        .output()
        .unwrap();
    // The results go to stdout; stderr holds the device line, or the one error, and nothing else.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert!(stderr.starts_with("device: wgpu ") && stderr.lines().count() == 1, "stderr:\n{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("loss "));
    } else {
        // No Vulkan driver on this machine (scripts/setup installs lavapipe): the one error is ours.
        assert!(stderr.starts_with("error: no wgpu adapter could be opened") && stderr.lines().count() == 1, "stderr:\n{stderr}");
    }
}

fn timed_get(addr: &str) -> (std::time::Duration, String) {
    let start = std::time::Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET /app.js HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("answered");
    (start.elapsed(), String::from_utf8_lossy(&buf).to_string())
}

#[test]
fn five_hundred_idle_and_trickling_sockets_do_not_starve_a_request() {
    let site = site("flood");
    // 250 sockets that never send a byte, and 250 that send a request one byte every 100 ms
    // (slowloris): far more than the server handles at once.
    let idle: Vec<TcpStream> = (0..250).map(|_| TcpStream::connect(&site.addr).unwrap()).collect();
    let trickle: Vec<TcpStream> = (0..250).map(|_| TcpStream::connect(&site.addr).unwrap()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let trickler = std::thread::spawn(move || {
        let mut trickle = trickle;
        let request = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut i = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            for s in &mut trickle {
                let _ = s.write_all(&request[i % request.len()..i % request.len() + 1]);
            }
            i += 1;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    for round in 0..5 {
        let (took, answer) = timed_get(&site.addr);
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("export {}"), "round {round}: {answer}");
        assert!(took < std::time::Duration::from_secs(1), "round {round}: answered after {took:?} beside 500 idle or trickling sockets");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickler.join().unwrap();
    drop(idle);
}

/// Peak resident memory of a process so far, in bytes (Linux): a buffer freed again still shows.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_one_megabyte_header_line_is_refused_without_reading_it_into_memory() {
    // The server runs as its own process (`tinytune serve`), so its memory is measured alone,
    // not mixed with the other tests running in this one.
    let site = site("bighead");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinytune"))
        .args(["serve", "--port", "0", "--root"])
        .arg(&site.root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    let addr = first.split("http://").nth(1).and_then(|r| r.split('/').next()).expect("the address").to_string();
    // Warm the server up (its first connections allocate what every later one reuses).
    for _ in 0..3 {
        assert!(timed_get(&addr).1.starts_with("HTTP/1.1 200"));
    }
    let mut line = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    line.resize(line.len() + (1 << 20), b'a');
    let before = rss_of(child.id());
    // Several at once: a server that buffers the line would hold a megabyte per socket.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            let line = line.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
                // The server closes the socket once the head is over its limit, so the rest of
                // the write may fail; the answer is read either way.
                let _ = s.write_all(&line);
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).to_string()
            })
        })
        .collect();
    let answers: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let after = rss_of(child.id());
    let ok = timed_get(&addr).1;
    let _ = child.kill();
    let _ = child.wait();
    // The answer may be lost to a reset when the client is still writing as the server closes;
    // every answer that arrives is the refusal.
    assert!(answers.iter().all(|a| a.is_empty() || a.starts_with("HTTP/1.1 431")), "{answers:?}");
    assert!(answers.iter().any(|a| a.starts_with("HTTP/1.1 431")), "no refusal arrived: {answers:?}");
    let (b, a) = (before.expect("VmHWM of the server"), after.expect("VmHWM of the server"));
    // 8 buffered lines at once would raise the peak by megabytes; a bounded reader adds a few
    // 16 KiB buffers.
    assert!(a.saturating_sub(b) < 3 << 20, "the server's peak resident memory grew by {} KiB", a.saturating_sub(b) >> 10);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[test]
fn on_loopback_only_loopback_host_names_are_answered() {
    let site = site("rebind");
    let send = |host: &str| {
        let mut s = TcpStream::connect(&site.addr).unwrap();
        write!(s, "GET /app.js HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        String::from_utf8_lossy(&buf).to_string()
    };
    for ok in [site.addr.as_str(), "localhost", "LOCALHOST:8000", "127.0.0.1", "[::1]:8000", "[::1]"] {
        assert!(send(ok).starts_with("HTTP/1.1 200"), "{ok}");
    }
    for bad in ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil", "[::1]x", "127.0.0.1:80:80", ""] {
        let answer = send(bad);
        assert!(answer.starts_with("HTTP/1.1 421"), "{bad}: {answer}");
        assert!(!answer.contains("export {}"), "{bad}");
    }
    let mut s = TcpStream::connect(&site.addr).unwrap();
    write!(s, "GET /app.js HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"));
}

#[test]
fn the_model_folder_is_offered_read_only_gguf_files_only() {
    let base = Scratch::path("serve-models");
    let (root, models) = (base.join("www"), base.join("models"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(root.join("index.html"), "<!doctype html>").unwrap();
    std::fs::write(models.join("tiny.gguf"), b"GGUF-bytes").unwrap();
    std::fs::write(models.join("notes.txt"), "not a model").unwrap();
    std::fs::write(base.join("secret.gguf"), SECRET).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(base.join("secret.gguf"), models.join("link.gguf")).unwrap();
    let server = Server::bind("127.0.0.1", 0, &root).unwrap().with_models(Some(models.clone()));
    let addr = server.local_addr();
    std::thread::spawn(move || server.run());

    let (code, head, body) = raw_get(&addr, "/models/");
    assert_eq!(code, 200);
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert_eq!(body, r#"[{"bytes":10,"name":"tiny.gguf"}]"#);
    assert_eq!(raw_get(&addr, "/models/tiny.gguf").2, "GGUF-bytes");
    for bad in ["/models/notes.txt", "/models/link.gguf", "/models/..%2Fsecret.gguf", "/models/../secret.gguf", "/models/%2e%2e/secret.gguf"] {
        let (code, _, body) = raw_get(&addr, bad);
        assert!(code == 404 || code == 400 || code == 403, "{bad}: {code}");
        assert!(!body.contains(SECRET), "{bad}");
    }
}

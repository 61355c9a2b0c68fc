//! `tinytune serve`: headers, content types, and that no request reaches a file outside the
//! root, whatever the spelling of the path.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use tinytune::serve::Server;

struct Site {
    root: PathBuf,
    addr: String,
}

const SECRET: &str = "top-secret-outside-the-root";

/// A temp folder `<tmp>/site` with `www/` as the root, a secret beside it, and symlinks.
fn site(name: &str) -> Site {
    let base = std::env::temp_dir().join(format!("tinytune-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
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
    Site { root, addr }
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
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
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
    let post = send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"), "{post}");
    let head = send("HEAD /app.js HTTP/1.1\r\nHost: x\r\n\r\n");
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

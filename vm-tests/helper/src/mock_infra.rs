//! `mock-infra`: the mock Infrastructure service for the end-to-end harness. It runs
//! inside the test's network namespace (started by the harness with `ip netns exec`),
//! accepts any request, records each one as a JSON line in a log file (method, path,
//! authorization header, body) and answers like a plain REST store: writes (PUT, POST,
//! PATCH) store the body under the path and answer 200 with it, GET answers the stored
//! body or 404, DELETE forgets. It never talks to anything but its own clients.
//!
//! usage: mock-infra <listen-addr:port> <log-file>

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn handle(s: TcpStream, store: &mut HashMap<String, String>, log: &str) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut len = 0usize;
    let mut auth = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).to_string();
    let entry =
        serde_json::json!({"method": method, "path": path, "authorization": auth, "body": body});
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(f, "{entry}");
    }
    let (status, resp) = match method.as_str() {
        "PUT" | "POST" | "PATCH" => {
            store.insert(path, body.clone());
            (
                "200 OK",
                if body.is_empty() {
                    "{}".to_string()
                } else {
                    body
                },
            )
        }
        "GET" => match store.get(&path) {
            Some(b) => ("200 OK", b.clone()),
            None => ("404 Not Found", "{\"error\":\"not found\"}".to_string()),
        },
        "DELETE" => {
            store.remove(&path);
            ("200 OK", "{}".to_string())
        }
        _ => ("405 Method Not Allowed", "{}".to_string()),
    };
    let mut w = s;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp}",
        resp.len()
    )?;
    w.flush()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: mock-infra <listen-addr:port> <log-file>");
        std::process::exit(2);
    }
    let listener = match TcpListener::bind(&args[1]) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mock-infra: cannot listen on {}: {e}", args[1]);
            std::process::exit(1);
        }
    };
    eprintln!("mock-infra: listening on {}", args[1]);
    let mut store = HashMap::new();
    for s in listener.incoming().flatten() {
        if let Err(e) = handle(s, &mut store, &args[2]) {
            eprintln!("mock-infra: request failed: {e}");
        }
    }
}

//! A minimal HTTP/1.1 client over `std::net`, enough for the stand-in installer:
//! `http://<ip>[:port]/path` URLs only (the test network has no DNS), one request per
//! connection, bodies by Content-Length, chunked encoding, or until close.
//! It must never follow redirects or retry: the real installer does neither.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("unsupported URL (stand-in speaks plain http only): {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let end = h
            .find(']')
            .ok_or_else(|| format!("bad URL authority: {url}"))?;
        let port = h[end + 1..].strip_prefix(':').unwrap_or("80");
        (h[..end].to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), "80"),
        }
    };
    let port = port
        .parse()
        .map_err(|_| format!("bad port in URL: {url}"))?;
    Ok(Url { host, port, path })
}

pub fn request(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let u = parse_url(url)?;
    let url = &crate::redact(url);
    let addr: SocketAddr = (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", u.host))?
        .next()
        .ok_or_else(|| format!("no address for {}", u.host))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr} failed: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let host_hdr = if u.port == 80 {
        u.host.clone()
    } else if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {host_hdr}\r\nUser-Agent: proxmox-fetch-answer (stand-in)\r\nAccept: */*\r\nConnection: close\r\n",
        u.path
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if method != "GET" || !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("sending request to {url} failed: {e}"))?;

    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("reading status from {url}: {e}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line from {url}: {line:?}"))?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut content_type = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)
            .map_err(|e| format!("reading headers from {url}: {e}"))?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = v.parse().ok(),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "content-type" => content_type = v.to_string(),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)
                .map_err(|e| format!("reading chunk from {url}: {e}"))?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size from {url}: {line:?}"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk)
                .map_err(|e| format!("reading chunk from {url}: {e}"))?;
            body.extend_from_slice(&chunk);
            line.clear();
            r.read_line(&mut line).ok();
        }
    } else if let Some(n) = content_length {
        body.resize(n, 0);
        r.read_exact(&mut body)
            .map_err(|e| format!("reading body from {url}: {e}"))?;
    } else {
        r.read_to_end(&mut body)
            .map_err(|e| format!("reading body from {url}: {e}"))?;
    }
    Ok(Response {
        status,
        content_type,
        body,
    })
}

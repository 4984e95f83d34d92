//! A minimal HTTP/1.1 loopback upstream for the e2e tests: answers every request with
//! `200 hello from upstream`, keeping connections alive.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};

/// Body of every upstream response.
pub const BODY: &str = "hello from upstream";

/// Starts the upstream on a free port of 127.0.0.1; it serves until the test process exits.
pub fn start() -> SocketAddr {
    start_on(Ipv4Addr::LOCALHOST)
}

/// Starts the upstream on a free port of the loopback address `ip` (any of 127.0.0.0/8), so
/// two upstreams can have distinct addresses.
pub fn start_on(ip: Ipv4Addr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Answers bodyless requests on one connection until the peer closes it.
fn serve(stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut saw_request_line = false;
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == b"\r\n" && saw_request_line => break,
                Ok(_) => saw_request_line = true,
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

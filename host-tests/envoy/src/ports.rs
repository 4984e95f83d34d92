//! Free loopback ports for Envoy listeners and admin, unique within the test process.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Ports already handed out in this process: the kernel may offer a just-released ephemeral
/// port again, and two parallel tests must never get the same one.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A currently free `127.0.0.1` port never returned before in this process (bind port 0, read
/// the port, release it). Another process can still take it before Envoy binds; Envoy then
/// exits with a bind error, which [`crate::EnvoyProcess::start`] reports.
pub fn reserve_port() -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut ports = handed_out().lock().unwrap_or_else(PoisonError::into_inner);
        if ports.insert(port) {
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| reserve_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        TcpListener::bind((Ipv4Addr::LOCALHOST, ports[0])).unwrap();
    }
}

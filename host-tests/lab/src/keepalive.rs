//! Keep-alive clients that reconnect whenever the server closes their connection, and what each
//! saw: requests served and failed, connections opened, and when the server first closed one
//! (HTTP/1.1: a response carrying `Connection: close`; HTTP/2: the connection ending gracefully,
//! i.e. after GOAWAY). The drain scenario and the drain-signal e2e tests drive them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// The client's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// HTTP/1.1 keep-alive, one request at a time.
    Http1,
    /// HTTP/2 (prior knowledge), one request at a time.
    Http2,
}

/// What one client saw.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed: their error or unexpected status.
    pub failed: Vec<String>,
    /// Connections opened.
    pub connections: u64,
    /// Connections the server closed (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY).
    pub closed_by_server: u64,
    /// When the server first closed one.
    pub first_close: Option<Instant>,
}

/// Events a client reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// Its first request was served.
    Served,
    /// It was served on a new connection after the server closed one.
    Reconnected,
}

/// Why a connection ended.
enum ConnectionEnd {
    Stopped,
    ClosedByServer,
    Failed,
}

/// A TCP connection to `addr` from `source` (any free port).
pub async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(addr).await
}

/// One HTTP/1.1 request on a new connection from `source`: its status, headers and body.
pub async fn exchange(
    source: Ipv4Addr,
    addr: SocketAddr,
    request: Request<Empty<Bytes>>,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let stream = connect_from(source, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// Requests `path` from loopback every `interval` over keep-alive connections to `addr`,
/// reconnecting whenever the server closes one, until `stop`; reports [`ClientEvent`]s on
/// `events`.
pub async fn run_client(
    protocol: KeepAlive,
    addr: SocketAddr,
    path: &'static str,
    interval: Duration,
    stop: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<ClientEvent>,
) -> ClientReport {
    let mut report = ClientReport::default();
    let mut reconnected = false;
    while !stop.load(Ordering::SeqCst) {
        let stream = match connect_from(Ipv4Addr::LOCALHOST, addr).await {
            Ok(stream) => stream,
            Err(err) => {
                report.failed.push(format!("connect: {err}"));
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        report.connections += 1;
        let served_before = report.ok;
        let end = match protocol {
            KeepAlive::Http1 => http1(stream, path, interval, &stop, &mut report, &events).await,
            KeepAlive::Http2 => {
                http2(stream, addr, path, interval, &stop, &mut report, &events).await
            }
        };
        if matches!(end, ConnectionEnd::ClosedByServer) {
            report.closed_by_server += 1;
            report.first_close.get_or_insert_with(Instant::now);
        }
        let served_here = report.ok > served_before;
        if served_here && report.connections > 1 && report.closed_by_server > 0 && !reconnected {
            reconnected = true;
            let _ = events.send(ClientEvent::Reconnected);
        }
        if matches!(end, ConnectionEnd::Failed) {
            tokio::time::sleep(interval).await;
        }
    }
    report
}

/// Counts one answered request; `Served` on the client's first success.
fn served(
    status: StatusCode,
    report: &mut ClientReport,
    events: &mpsc::UnboundedSender<ClientEvent>,
) {
    if status == StatusCode::OK {
        if report.ok == 0 {
            let _ = events.send(ClientEvent::Served);
        }
        report.ok += 1;
    } else {
        report.failed.push(format!("status {status}"));
    }
}

async fn http1(
    stream: TcpStream,
    path: &'static str,
    interval: Duration,
    stop: &AtomicBool,
    report: &mut ClientReport,
    events: &mpsc::UnboundedSender<ClientEvent>,
) -> ConnectionEnd {
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(err) => {
            report.failed.push(format!("http/1.1 handshake: {err}"));
            return ConnectionEnd::Failed;
        }
    };
    tokio::spawn(conn);
    while !stop.load(Ordering::SeqCst) {
        if sender.ready().await.is_err() {
            // Closed without telling: the next request goes on a new connection.
            return ConnectionEnd::Failed;
        }
        let request = Request::get(path)
            .header("host", "service")
            .body(Empty::<Bytes>::new())
            .unwrap_or_default();
        match sender.send_request(request).await {
            Ok(response) => {
                let close = response
                    .headers()
                    .get("connection")
                    .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
                let status = response.status();
                if let Err(err) = response.into_body().collect().await {
                    report.failed.push(format!("http/1.1 body: {err}"));
                    return ConnectionEnd::Failed;
                }
                served(status, report, events);
                if close {
                    return ConnectionEnd::ClosedByServer;
                }
            }
            Err(err) => {
                report.failed.push(format!("http/1.1: {err}"));
                return ConnectionEnd::Failed;
            }
        }
        tokio::time::sleep(interval).await;
    }
    ConnectionEnd::Stopped
}

async fn http2(
    stream: TcpStream,
    addr: SocketAddr,
    path: &'static str,
    interval: Duration,
    stop: &AtomicBool,
    report: &mut ClientReport,
    events: &mpsc::UnboundedSender<ClientEvent>,
) -> ConnectionEnd {
    let (mut sender, conn) =
        match hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
        {
            Ok(pair) => pair,
            Err(err) => {
                report.failed.push(format!("h2 handshake: {err}"));
                return ConnectionEnd::Failed;
            }
        };
    let conn = tokio::spawn(conn);
    while !stop.load(Ordering::SeqCst) && !conn.is_finished() {
        if sender.ready().await.is_err() {
            break;
        }
        let request = Request::get(format!("http://{addr}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap_or_default();
        match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                if let Err(err) = response.into_body().collect().await {
                    report.failed.push(format!("h2 body: {err}"));
                } else {
                    served(status, report, events);
                }
            }
            Err(err) => report.failed.push(format!("h2: {err}")),
        }
        tokio::time::sleep(interval).await;
    }
    drop(sender);
    if stop.load(Ordering::SeqCst) {
        conn.abort();
        return ConnectionEnd::Stopped;
    }
    match conn.await {
        Ok(Ok(())) => ConnectionEnd::ClosedByServer,
        Ok(Err(err)) => {
            report.failed.push(format!("h2 connection: {err}"));
            ConnectionEnd::Failed
        }
        Err(err) => {
            report.failed.push(format!("h2 connection task: {err}"));
            ConnectionEnd::Failed
        }
    }
}

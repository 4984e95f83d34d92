//! A wire-level gRPC probe: one unary call over a fresh HTTP/2 connection, returning the raw
//! status, headers and trailers, so tests and the demo can check exactly what a client receives
//! (a tonic client folds headers and trailers into one `Status`) for any method, authority and
//! request headers, from a chosen loopback source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpSocket;

/// What came back, as it crossed the wire.
#[derive(Debug)]
pub struct RawGrpcResponse {
    /// HTTP status (200 for any gRPC answer, including errors).
    pub status: StatusCode,
    /// Response headers; a trailers-only error carries `grpc-status` here.
    pub headers: HeaderMap,
    /// Trailers, when the response had any.
    pub trailers: Option<HeaderMap>,
}

impl RawGrpcResponse {
    /// The `grpc-status` code, from the trailers or (trailers-only) the headers.
    pub fn grpc_status(&self) -> Option<i32> {
        self.trailers
            .as_ref()
            .and_then(|trailers| trailers.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
    }

    /// A response header's value as text (`None` when absent or not UTF-8).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// One unary call: where to, which method, with which headers.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    /// The server (or Envoy listener) to connect to.
    pub addr: SocketAddr,
    /// The connection's local address (a loopback address other than 127.0.0.1 plays another client).
    pub source: IpAddr,
    /// `:authority`; the address when `None`.
    pub authority: Option<String>,
    /// `/package.Service/Method`.
    pub path: String,
    /// Extra request metadata.
    pub headers: Vec<(String, String)>,
}

impl GrpcCall {
    /// A call of `path` on `addr` from 127.0.0.1 with no extra metadata.
    pub fn new(addr: SocketAddr, path: impl Into<String>) -> Self {
        Self {
            addr,
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
            authority: None,
            path: path.into(),
            headers: Vec::new(),
        }
    }

    /// Sends it to `authority` (a virtual host of an egress listener).
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    /// Adds request metadata.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Connects from `source`.
    pub fn from_source(mut self, source: IpAddr) -> Self {
        self.source = source;
        self
    }
}

/// Why the probe got no response.
pub type ProbeError = Box<dyn std::error::Error + Send + Sync>;

/// Makes `call` with an empty request message over a new cleartext HTTP/2 connection.
pub async fn raw_grpc_call(call: &GrpcCall) -> Result<RawGrpcResponse, ProbeError> {
    let socket = match call.source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(call.source, 0))?;
    let stream = socket.connect(call.addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let authority = call
        .authority
        .clone()
        .unwrap_or_else(|| call.addr.to_string());
    let mut request = Request::post(format!("http://{authority}{}", call.path))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in &call.headers {
        request = request.header(name, value);
    }
    // An empty message: uncompressed flag and zero length.
    let request = request.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))?;
    let (parts, body) = sender.send_request(request).await?.into_parts();
    let collected = body.collect().await?;
    Ok(RawGrpcResponse {
        status: parts.status,
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
    })
}

/// Calls `mesh.test.v1.Echo/Get` on `addr` from 127.0.0.1.
pub async fn raw_grpc_get(addr: SocketAddr) -> Result<RawGrpcResponse, ProbeError> {
    raw_grpc_call(&GrpcCall::new(addr, "/mesh.test.v1.Echo/Get")).await
}

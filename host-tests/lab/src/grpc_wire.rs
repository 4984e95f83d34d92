//! A wire-level gRPC probe: one unary `mesh.test.v1.Echo/Get` over a fresh HTTP/2 connection,
//! returning the raw status, headers and trailers, so tests can check exactly what a client
//! receives (a tonic client folds headers and trailers into one `Status`).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

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

/// Why the probe got no response.
pub type ProbeError = Box<dyn std::error::Error + Send + Sync>;

/// Calls `Echo/Get` with an empty request on `addr` over a new cleartext HTTP/2 connection.
pub async fn raw_grpc_get(addr: SocketAddr) -> Result<RawGrpcResponse, ProbeError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    // An empty EchoRequest: uncompressed flag and zero length.
    let request = Request::post(format!("http://{addr}/mesh.test.v1.Echo/Get"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))?;
    let (parts, body) = sender.send_request(request).await?.into_parts();
    let collected = body.collect().await?;
    Ok(RawGrpcResponse {
        status: parts.status,
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
    })
}

//! The load generator's client side: connection pools per protocol, one attempt of a request, and the
//! retry loop of a client request with outcome classification.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use super::{
    GrpcMethod, LoadConfig, LoadError, PreparedClass, Protocol, RetryPolicy, CLIENT_ATTEMPT_HEADER,
    SHED_HEADER,
};
use crate::upstream::proto::echo_client::EchoClient;
use crate::upstream::proto::{EchoReply, EchoRequest, SlowRequest};
use crate::upstream::UPSTREAM_NAME_HEADER;

/// How one attempt (or a whole client request, for its last attempt) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// HTTP status below 400, or gRPC OK, without the shed header.
    Success,
    /// No complete response within the client timeout.
    Timeout,
    /// The TCP connection (or the HTTP handshake on it) could not be established.
    Connect,
    /// The connection failed mid-request (reset, closed, protocol error).
    Transport,
    /// HTTP status 400 or above, without the shed header.
    Http(StatusCode),
    /// gRPC non-OK status, without the shed header.
    Grpc(tonic::Code),
    /// A response carrying [`SHED_HEADER`].
    Shed,
}

impl Outcome {
    /// Whether a response came back (as opposed to a timeout or a connection failure).
    pub(crate) fn responded(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Http(_) | Self::Grpc(_) | Self::Shed
        )
    }

    fn retryable(self) -> bool {
        match self {
            Self::Success => false,
            Self::Http(status) => {
                status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Timeout | Self::Connect | Self::Transport | Self::Grpc(_) | Self::Shed => true,
        }
    }
}

/// How one attempt ended, and which upstream answered it.
struct Attempt {
    outcome: Outcome,
    /// The response's [`UPSTREAM_NAME_HEADER`], if any.
    responder: Option<String>,
}

impl From<Outcome> for Attempt {
    /// An attempt that got no response naming its upstream.
    fn from(outcome: Outcome) -> Self {
        Self {
            outcome,
            responder: None,
        }
    }
}

/// The final outcome of one client request.
pub(crate) struct Finished {
    pub(crate) class: usize,
    pub(crate) outcome: Outcome,
    /// The upstream that answered the final attempt ([`UPSTREAM_NAME_HEADER`]), if named.
    pub(crate) responder: Option<String>,
    /// From the scheduled send time to the final outcome.
    pub(crate) latency: Duration,
    /// Attempts made, retries included.
    pub(crate) attempts: u32,
}

/// What every request of a run looks like, by class.
pub(crate) struct RequestPlan {
    pub(crate) classes: Vec<PreparedClass>,
    method: Method,
    /// Path only, for HTTP/1.1 (with a Host header).
    origin_form: Uri,
    /// `http://authority/path`, for HTTP/2's `:authority`.
    absolute_form: Uri,
    authority: HeaderValue,
    timeout: Duration,
    retry: RetryPolicy,
}

impl RequestPlan {
    pub(crate) fn new(config: &LoadConfig, classes: Vec<PreparedClass>) -> Result<Self, LoadError> {
        let authority = config
            .authority
            .clone()
            .unwrap_or_else(|| config.target.to_string());
        let invalid = |what: &str| LoadError::InvalidConfig(format!("bad {what}"));
        Ok(Self {
            classes,
            method: config.method.clone(),
            origin_form: Uri::try_from(config.path.as_str()).map_err(|_| invalid("path"))?,
            absolute_form: Uri::try_from(format!("http://{authority}{}", config.path))
                .map_err(|_| invalid("authority or path"))?,
            authority: HeaderValue::try_from(authority).map_err(|_| invalid("authority"))?,
            timeout: config.timeout,
            retry: config.retry,
        })
    }

    /// The class owning position `weight_slot` (0..total weight) of the weighted round robin.
    pub(crate) fn class_of(&self, weight_slot: u64) -> usize {
        self.classes
            .iter()
            .position(|class| weight_slot < class.weight_end)
            .unwrap_or(0)
    }

    fn http_request(
        &self,
        class: usize,
        attempt: u32,
        protocol: Protocol,
    ) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = self.method.clone();
        *request.headers_mut() = self.headers(class, attempt);
        if protocol == Protocol::Http1 {
            *request.uri_mut() = self.origin_form.clone();
            request.headers_mut().insert(HOST, self.authority.clone());
        } else {
            *request.uri_mut() = self.absolute_form.clone();
        }
        request
    }

    /// One gRPC call of `class` on `client`: the class's method, its name as the message.
    async fn grpc_call(
        &self,
        client: &mut EchoClient<Channel>,
        class: usize,
        attempt: u32,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        let (message, method) = self
            .classes
            .get(class)
            .map(|c| (c.name.clone(), c.grpc_method))
            .unwrap_or_default();
        let metadata = MetadataMap::from_headers(self.headers(class, attempt));
        match method {
            GrpcMethod::Get => {
                let mut request = tonic::Request::new(EchoRequest { message });
                *request.metadata_mut() = metadata;
                client.get(request).await
            }
            GrpcMethod::Slow => {
                let mut request = tonic::Request::new(SlowRequest {
                    message,
                    delay_ms: 0,
                });
                *request.metadata_mut() = metadata;
                client.slow(request).await
            }
        }
    }

    fn headers(&self, class: usize, attempt: u32) -> HeaderMap {
        let mut headers = self
            .classes
            .get(class)
            .map(|class| class.headers.clone())
            .unwrap_or_default();
        headers.insert(CLIENT_ATTEMPT_HEADER, HeaderValue::from(attempt));
        headers
    }
}

type Http1Slot = Mutex<Option<http1::SendRequest<Empty<Bytes>>>>;
type Http2Slot = Mutex<Option<http2::SendRequest<Empty<Bytes>>>>;

enum Pool {
    /// An idle connection sits in its slot; a request holds the slot's (FIFO) lock for its whole exchange.
    Http1(Vec<Http1Slot>),
    /// A request clones the slot's sender and multiplexes on it.
    Http2(Vec<Http2Slot>),
    Grpc(Vec<EchoClient<Channel>>),
}

/// Connection pool of a run, used round robin.
pub(crate) struct Client {
    target: SocketAddr,
    pool: Pool,
    next: AtomicUsize,
}

impl Client {
    /// Builds the pool, connecting eagerly where the target answers (lazily on first use otherwise).
    pub(crate) async fn connect(config: &LoadConfig) -> Result<Self, LoadError> {
        let target = config.target;
        let pool = match config.protocol {
            Protocol::Http1 => {
                let mut slots = Vec::with_capacity(config.connections);
                for _ in 0..config.connections {
                    slots.push(Mutex::new(connect_http1(target).await.ok()));
                }
                Pool::Http1(slots)
            }
            Protocol::Http2 => {
                let mut slots = Vec::with_capacity(config.connections);
                for _ in 0..config.connections {
                    slots.push(Mutex::new(connect_http2(target).await.ok()));
                }
                Pool::Http2(slots)
            }
            Protocol::Grpc => {
                let invalid = |what: &str| LoadError::InvalidConfig(format!("bad {what} for gRPC"));
                let mut endpoint = Endpoint::from_shared(format!("http://{target}"))
                    .map_err(|_| invalid("target"))?
                    .tcp_nodelay(true)
                    .connect_timeout(config.timeout);
                if let Some(authority) = &config.authority {
                    let origin = Uri::try_from(format!("http://{authority}"))
                        .map_err(|_| invalid("authority"))?;
                    endpoint = endpoint.origin(origin);
                }
                let mut clients = Vec::with_capacity(config.connections);
                for _ in 0..config.connections {
                    let channel = match endpoint.connect().await {
                        Ok(channel) => channel,
                        Err(_) => endpoint.connect_lazy(),
                    };
                    clients.push(EchoClient::new(channel));
                }
                Pool::Grpc(clients)
            }
        };
        Ok(Self {
            target,
            pool,
            next: AtomicUsize::new(0),
        })
    }

    /// One attempt on the next connection of the pool (no timeout: the caller bounds it).
    async fn attempt(&self, plan: &RequestPlan, class: usize, attempt: u32) -> Attempt {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        match &self.pool {
            Pool::Http1(slots) => {
                let request = plan.http_request(class, attempt, Protocol::Http1);
                http1_attempt(&slots[turn % slots.len()], self.target, request).await
            }
            Pool::Http2(slots) => {
                let request = plan.http_request(class, attempt, Protocol::Http2);
                http2_attempt(&slots[turn % slots.len()], self.target, request).await
            }
            Pool::Grpc(clients) => {
                let mut client = clients[turn % clients.len()].clone();
                let (outcome, metadata) = match plan.grpc_call(&mut client, class, attempt).await {
                    Ok(response) if response.metadata().contains_key(SHED_HEADER) => {
                        (Outcome::Shed, response.metadata().clone())
                    }
                    Ok(response) => (Outcome::Success, response.metadata().clone()),
                    Err(status) => (classify_grpc_error(&status), status.metadata().clone()),
                };
                Attempt {
                    outcome,
                    responder: responder(&metadata.into_headers()),
                }
            }
        }
    }
}

/// One client request: attempts (each bounded by the timeout) and retries per the plan's policy.
pub(crate) async fn request(
    client: Arc<Client>,
    plan: Arc<RequestPlan>,
    class: usize,
    due: Instant,
) -> Finished {
    let mut attempt = 1;
    let mut attempt_start = due;
    loop {
        let Attempt { outcome, responder } = tokio::time::timeout_at(
            attempt_start + plan.timeout,
            client.attempt(&plan, class, attempt),
        )
        .await
        .unwrap_or_else(|_| Outcome::Timeout.into());
        if !outcome.retryable() || attempt > plan.retry.max_retries {
            return Finished {
                class,
                outcome,
                responder,
                latency: due.elapsed(),
                attempts: attempt,
            };
        }
        tokio::time::sleep(plan.retry.backoff).await;
        attempt += 1;
        attempt_start = Instant::now();
    }
}

async fn http1_attempt(
    slot: &Http1Slot,
    target: SocketAddr,
    request: Request<Empty<Bytes>>,
) -> Attempt {
    let mut idle = slot.lock().await;
    // Taken out of the slot for the exchange: if the attempt is cut short (timeout), the half-used
    // connection is dropped instead of being reused.
    let reusable = match idle.take() {
        Some(mut sender) if !sender.is_closed() => sender.ready().await.is_ok().then_some(sender),
        _ => None,
    };
    let mut sender = match reusable {
        Some(sender) => sender,
        None => match connect_http1(target).await {
            Ok(sender) => sender,
            Err(outcome) => return outcome.into(),
        },
    };
    let response = match sender.try_send_request(request).await {
        Ok(response) => response,
        Err(mut error) => {
            // The peer closed the idle connection before the request went out (a keep-alive race):
            // send it once more on a fresh connection, as HTTP clients do.
            let Some(unsent) = error.take_message() else {
                return Outcome::Transport.into();
            };
            sender = match connect_http1(target).await {
                Ok(sender) => sender,
                Err(outcome) => return outcome.into(),
            };
            match sender.send_request(unsent).await {
                Ok(response) => response,
                Err(_) => return Outcome::Transport.into(),
            }
        }
    };
    let attempt = read_http_response(response).await;
    if attempt.outcome != Outcome::Transport {
        *idle = Some(sender);
    }
    attempt
}

async fn http2_attempt(
    slot: &Http2Slot,
    target: SocketAddr,
    request: Request<Empty<Bytes>>,
) -> Attempt {
    let mut sender = {
        let mut shared = slot.lock().await;
        match shared.as_ref().filter(|sender| !sender.is_closed()) {
            Some(sender) => sender.clone(),
            None => match connect_http2(target).await {
                Ok(sender) => {
                    *shared = Some(sender.clone());
                    sender
                }
                Err(outcome) => return outcome.into(),
            },
        }
    };
    if sender.ready().await.is_err() {
        return Outcome::Transport.into();
    }
    match sender.send_request(request).await {
        Ok(response) => read_http_response(response).await,
        Err(_) => Outcome::Transport.into(),
    }
}

async fn read_http_response(response: Response<Incoming>) -> Attempt {
    let (parts, body) = response.into_parts();
    if body.collect().await.is_err() {
        return Outcome::Transport.into();
    }
    Attempt {
        outcome: classify_http(parts.status, &parts.headers),
        responder: responder(&parts.headers),
    }
}

/// The upstream named by a response's [`UPSTREAM_NAME_HEADER`].
fn responder(headers: &HeaderMap) -> Option<String> {
    let name = headers.get(UPSTREAM_NAME_HEADER)?;
    Some(String::from_utf8_lossy(name.as_bytes()).into_owned())
}

fn classify_http(status: StatusCode, headers: &HeaderMap) -> Outcome {
    if headers.contains_key(SHED_HEADER) {
        Outcome::Shed
    } else if status.as_u16() < 400 {
        Outcome::Success
    } else {
        Outcome::Http(status)
    }
}

fn classify_grpc_error(status: &tonic::Status) -> Outcome {
    if status.metadata().contains_key(SHED_HEADER) {
        return Outcome::Shed;
    }
    // tonic reports a refused connection as UNAVAILABLE with the io::Error somewhere in the source chain.
    let mut source: Option<&(dyn Error + 'static)> = Some(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Outcome::Connect;
            }
        }
        source = error.source();
    }
    Outcome::Grpc(status.code())
}

async fn connect_tcp(target: SocketAddr) -> Result<TcpStream, Outcome> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|_| Outcome::Connect)?;
    // Latency-sensitive small requests; failing to set it only costs latency.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect_http1(target: SocketAddr) -> Result<http1::SendRequest<Empty<Bytes>>, Outcome> {
    let stream = connect_tcp(target).await?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Outcome::Connect)?;
    // The connection's error ends it; the next request on the slot sees it closed and reconnects.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn connect_http2(target: SocketAddr) -> Result<http2::SendRequest<Empty<Bytes>>, Outcome> {
    let stream = connect_tcp(target).await?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|_| Outcome::Connect)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn shed_header_wins_over_status() {
        let mut shed = HeaderMap::new();
        shed.insert(SHED_HEADER, HeaderValue::from_static("1"));
        assert_eq!(
            classify_http(StatusCode::SERVICE_UNAVAILABLE, &shed),
            Outcome::Shed
        );
        assert_eq!(classify_http(StatusCode::OK, &shed), Outcome::Shed);
        assert_eq!(
            classify_http(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()),
            Outcome::Http(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            classify_http(StatusCode::NO_CONTENT, &HeaderMap::new()),
            Outcome::Success
        );
    }

    #[test]
    fn grpc_shed_and_connect_refused_are_recognised() {
        let mut shed = tonic::Status::unavailable("shed");
        shed.metadata_mut()
            .insert(SHED_HEADER, "1".parse().unwrap());
        assert_eq!(classify_grpc_error(&shed), Outcome::Shed);

        let mut refused = tonic::Status::unavailable("tcp connect error");
        refused.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(classify_grpc_error(&refused), Outcome::Connect);

        let plain = tonic::Status::resource_exhausted("full");
        assert_eq!(
            classify_grpc_error(&plain),
            Outcome::Grpc(tonic::Code::ResourceExhausted)
        );
    }

    #[test]
    fn only_server_errors_throttling_and_failures_are_retried() {
        assert!(!Outcome::Success.retryable());
        assert!(!Outcome::Http(StatusCode::NOT_FOUND).retryable());
        assert!(Outcome::Http(StatusCode::TOO_MANY_REQUESTS).retryable());
        assert!(Outcome::Http(StatusCode::BAD_GATEWAY).retryable());
        assert!(Outcome::Timeout.retryable());
        assert!(Outcome::Shed.retryable());
    }
}

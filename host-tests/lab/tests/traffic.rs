//! The lab's traffic pieces against each other: scriptable upstreams (capacity model, faults, kill/restart,
//! counters) and the open-loop load generator (rate accuracy, latency, error classes, retries, classes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use mesh_lab::grpc_wire::{raw_grpc_call, raw_grpc_get, GrpcCall, RawGrpcResponse};
use mesh_lab::load::{self, LoadConfig, LoadError, Protocol, RequestClass, RetryPolicy};
use mesh_lab::upstream::proto::echo_client::EchoClient;
use mesh_lab::upstream::proto::{EchoRequest, SlowRequest};
use mesh_lab::upstream::{
    EchoedRequest, Fault, GrpcStatusDelivery, ServiceTime, Upstream, UpstreamConfig,
    UpstreamHandle, UPSTREAM_NAME_HEADER,
};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn start(config: UpstreamConfig) -> UpstreamHandle {
    Upstream::start(config).await.expect("upstream starts")
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn get(
    client: &HttpClient,
    upstream: &UpstreamHandle,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut request = Request::get(format!("{}/hello?x=1", upstream.url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .map_err(|error| error.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Polls `condition` every 2 ms until it holds, failing after 5 s (for states that raise no event).
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn assert_pending_for<F: Future + Unpin>(future: &mut F, period: Duration) {
    assert!(
        tokio::time::timeout(period, future).await.is_err(),
        "finished while it should be held"
    );
}

async fn grpc_client(upstream: &UpstreamHandle) -> EchoClient<tonic::transport::Channel> {
    EchoClient::connect(upstream.url()).await.unwrap()
}

#[tokio::test]
async fn requests_beyond_capacity_queue_for_a_worker() {
    let upstream = start(UpstreamConfig {
        workers: 2,
        service_time: ServiceTime::Constant(Duration::from_millis(20)),
        ..UpstreamConfig::new("capacity")
    })
    .await;
    let client = http_client();
    let started = Instant::now();
    let requests = (0..10).map(|_| async {
        let reply = get(&client, &upstream, &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        started.elapsed()
    });
    let mut latencies = join_all(requests).await;
    latencies.sort();
    // Two workers, 20 ms each: five waves, the last done at ~100 ms.
    let (first, last) = (latencies[0], latencies[9]);
    assert!(first >= Duration::from_millis(20), "first {first:?}");
    assert!(
        latencies[2] >= Duration::from_millis(40),
        "third {:?}",
        latencies[2]
    );
    assert!(
        (Duration::from_millis(95)..Duration::from_millis(180)).contains(&last),
        "last {last:?}"
    );
    let counters = upstream.counters();
    assert_eq!(counters.received, 10);
    assert_eq!(counters.completed, 10);
    assert_eq!(counters.peak_in_flight, 10);
    assert_eq!(counters.in_flight, 0);
}

#[tokio::test]
async fn queue_bound_rejects_the_overflow() {
    let upstream = start(UpstreamConfig {
        workers: 1,
        max_queue: Some(1),
        service_time: ServiceTime::Constant(Duration::from_millis(100)),
        ..UpstreamConfig::new("bounded")
    })
    .await;
    let client = http_client();
    let replies = join_all((0..3).map(|_| get(&client, &upstream, &[]))).await;
    let mut statuses: Vec<u16> = replies
        .iter()
        .map(|reply| reply.as_ref().unwrap().status.as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503]);
    assert_eq!(upstream.counters().rejected, 1);
}

#[tokio::test]
async fn http_error_fault_then_clear() {
    let upstream = start(UpstreamConfig::new("faulty")).await;
    let client = http_client();
    upstream.set_fault(Fault::http_error(1.0, StatusCode::BAD_GATEWAY));
    let reply = get(&client, &upstream, &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.headers[UPSTREAM_NAME_HEADER], "faulty");

    upstream.clear_fault();
    let reply = get(&client, &upstream, &[("x-probe", "yes")])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let echoed: EchoedRequest = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(echoed.upstream, "faulty");
    assert_eq!(echoed.method, "GET");
    assert_eq!(echoed.path, "/hello?x=1");
    assert_eq!(echoed.headers["x-probe"], "yes");
    let counters = upstream.counters();
    assert_eq!((counters.received, counters.injected_errors), (2, 1));
}

#[tokio::test]
async fn a_document_set_at_runtime_is_served_for_its_path_only() {
    let upstream = start(UpstreamConfig::new("registry")).await;
    let client = http_client();
    upstream.set_document("/hello?x=1", r#"[{"name": "a"}]"#);
    let reply = get(&client, &upstream, &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.body, r#"[{"name": "a"}]"#);
    upstream.set_document("/hello?x=1", "[]");
    assert_eq!(get(&client, &upstream, &[]).await.unwrap().body, "[]");
    let other = client
        .get(format!("{}/other", upstream.url()).parse().unwrap())
        .await
        .unwrap();
    let echoed: EchoedRequest =
        serde_json::from_slice(&other.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echoed.path, "/other");
    upstream.set_fault(Fault::http_error(1.0, StatusCode::SERVICE_UNAVAILABLE));
    let reply = get(&client, &upstream, &[]).await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "faults still apply"
    );
}

#[tokio::test]
async fn grpc_echo_answers_with_upstream_name() {
    let upstream = start(UpstreamConfig::new("grpc-a")).await;
    let mut client = grpc_client(&upstream).await;
    let response = client
        .get(EchoRequest {
            message: "ping".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        response.metadata().get(UPSTREAM_NAME_HEADER).unwrap(),
        "grpc-a"
    );
    let reply = response.into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.upstream.as_str()),
        ("ping", "grpc-a")
    );

    let started = Instant::now();
    client
        .slow(SlowRequest {
            message: "zzz".into(),
            delay_ms: 60,
        })
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(60));
}

#[tokio::test]
async fn health_checks_are_answered_serving_and_not_counted() {
    let upstream = start(UpstreamConfig {
        fault: Fault::http_error(1.0, StatusCode::SERVICE_UNAVAILABLE),
        ..UpstreamConfig::new("checked")
    })
    .await;
    let check = GrpcCall::new(upstream.addr(), "/grpc.health.v1.Health/Check");
    let response = raw_grpc_call(&check).await.unwrap();
    assert_eq!(response.grpc_status(), Some(0), "{response:?}");
    assert_eq!(upstream.counters().received, 0);
}

#[tokio::test]
async fn any_grpc_method_is_answered_as_echo_only_when_configured() {
    let method = "/payments.Payments/Authorize";
    let strict = start(UpstreamConfig::new("strict")).await;
    let call = raw_grpc_call(&GrpcCall::new(strict.addr(), method))
        .await
        .unwrap();
    assert_eq!(call.grpc_status(), Some(tonic::Code::Unimplemented as i32));

    let lenient = start(UpstreamConfig {
        any_grpc_method: true,
        ..UpstreamConfig::new("lenient")
    })
    .await;
    let call = raw_grpc_call(&GrpcCall::new(lenient.addr(), method))
        .await
        .unwrap();
    assert_eq!(call.grpc_status(), Some(0), "{call:?}");
    assert_eq!(call.header(UPSTREAM_NAME_HEADER), Some("lenient"));
    assert_eq!(lenient.counters().received, 1);
}

#[tokio::test]
async fn grpc_status_in_headers_is_a_trailers_only_response() {
    let upstream = start(UpstreamConfig::new("grpc-headers")).await;
    upstream.set_fault(Fault::grpc_error(
        1.0,
        tonic::Code::ResourceExhausted,
        GrpcStatusDelivery::Headers,
    ));
    let status = grpc_client(&upstream)
        .await
        .get(EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "injected-fault");

    let RawGrpcResponse {
        headers, trailers, ..
    } = raw_grpc_get(upstream.addr()).await.unwrap();
    assert_eq!(headers["grpc-status"], "8");
    assert!(trailers.is_none_or(|trailers| !trailers.contains_key("grpc-status")));
}

#[tokio::test]
async fn grpc_status_in_trailers_reaches_the_client() {
    let upstream = start(UpstreamConfig::new("grpc-trailers")).await;
    upstream.set_fault(Fault::grpc_error(
        1.0,
        tonic::Code::Unavailable,
        GrpcStatusDelivery::Trailers,
    ));
    let status = grpc_client(&upstream)
        .await
        .get(EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);

    let RawGrpcResponse {
        headers, trailers, ..
    } = raw_grpc_get(upstream.addr()).await.unwrap();
    assert!(!headers.contains_key("grpc-status"));
    assert_eq!(trailers.expect("trailers")["grpc-status"], "14");
}

#[tokio::test]
async fn stall_holds_requests_until_cleared() {
    let upstream = start(UpstreamConfig::new("staller")).await;
    upstream.set_fault(Fault::stall());
    let client = http_client();
    let mut request = Box::pin(get(&client, &upstream, &[]));
    assert_pending_for(&mut request, Duration::from_millis(150)).await;
    assert_eq!(upstream.counters().in_flight, 1);

    upstream.clear_fault();
    let reply = tokio::time::timeout(Duration::from_secs(2), request)
        .await
        .expect("released by clearing the stall")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn kill_drops_connections_and_restart_serves_the_same_port() {
    let mut upstream = start(UpstreamConfig::new("phoenix")).await;
    let port = upstream.port();
    let client = http_client();
    assert_eq!(
        get(&client, &upstream, &[]).await.unwrap().status,
        StatusCode::OK
    );

    upstream.set_fault(Fault::stall());
    let held = tokio::spawn({
        let client = client.clone();
        let url = upstream.url();
        async move {
            client
                .get(url.parse().unwrap())
                .await
                .map(|response| response.status())
        }
    });
    wait_until("the request is in flight", || {
        upstream.counters().in_flight == 1
    })
    .await;
    upstream.kill().await;
    assert!(!upstream.is_running());
    assert!(
        held.await.unwrap().is_err(),
        "in-flight request dropped by the kill"
    );
    assert!(
        get(&client, &upstream, &[]).await.is_err(),
        "nothing listens"
    );
    wait_until("the dropped request left", || {
        upstream.counters().in_flight == 0
    })
    .await;

    upstream.clear_fault();
    upstream.restart().await.unwrap();
    assert_eq!(upstream.port(), port);
    assert_eq!(
        get(&client, &upstream, &[]).await.unwrap().status,
        StatusCode::OK
    );
    let counters = upstream.counters();
    assert_eq!((counters.received, counters.completed), (3, 2));
}

#[tokio::test]
async fn retries_are_counted_from_attempt_headers() {
    let upstream = start(UpstreamConfig::new("retried")).await;
    let client = http_client();
    get(&client, &upstream, &[("x-envoy-attempt-count", "1")])
        .await
        .unwrap();
    get(&client, &upstream, &[("x-envoy-attempt-count", "3")])
        .await
        .unwrap();
    let mut request = tonic::Request::new(EchoRequest::default());
    request
        .metadata_mut()
        .insert("grpc-previous-rpc-attempts", "1".parse().unwrap());
    grpc_client(&upstream).await.get(request).await.unwrap();
    let counters = upstream.counters();
    assert_eq!((counters.received, counters.retries), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_holds_the_offered_rate() {
    let upstream = start(UpstreamConfig {
        workers: 1024,
        ..UpstreamConfig::new("idle")
    })
    .await;
    let config = LoadConfig {
        connections: 32,
        ..LoadConfig::new(
            upstream.addr(),
            Protocol::Http1,
            2000.0,
            Duration::from_secs(10),
        )
    };
    let report = load::run(&config).await.unwrap();
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(report.totals.requests, 20_000, "{json}");
    assert_eq!(report.totals.successes, 20_000, "{json}");
    assert_eq!(report.totals.errors.total(), 0, "{json}");
    assert!((report.achieved_rps - 2000.0).abs() <= 40.0, "{json}");
    assert!((report.totals.goodput_rps - 2000.0).abs() <= 40.0, "{json}");
    assert_eq!(upstream.counters().received, 20_000);
    let latency = report.totals.latency_success;
    assert_eq!(latency.count, 20_000);
    assert!(latency.p50_ms > 0.0, "{json}");
    assert!(latency.p50_ms <= latency.p90_ms, "{json}");
    assert!(latency.p90_ms <= latency.p99_ms, "{json}");
    assert!(latency.p99_ms <= latency.p999_ms, "{json}");
    assert!(latency.p999_ms <= latency.max_ms, "{json}");
    assert!(
        latency.p50_ms < 20.0,
        "an idle loopback upstream answers fast: {json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_does_not_slow_the_offered_load() {
    // Capacity 100 rps (2 workers × 20 ms); 200 rps offered for 0.5 s: the backlog must show as latency.
    let upstream = start(UpstreamConfig {
        workers: 2,
        service_time: ServiceTime::Constant(Duration::from_millis(20)),
        ..UpstreamConfig::new("overloaded")
    })
    .await;
    let config = LoadConfig {
        timeout: Duration::from_secs(5),
        ..LoadConfig::new(
            upstream.addr(),
            Protocol::Http2,
            200.0,
            Duration::from_millis(500),
        )
    };
    let report = load::run(&config).await.unwrap();
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(report.totals.successes, 100, "{json}");
    assert!(
        report.send_lag.p99_ms < 20.0,
        "sends stay on schedule: {json}"
    );
    assert!(
        report.totals.latency_all.max_ms > 350.0,
        "queueing shows as latency: {json}"
    );
    assert!(report.elapsed_secs > 0.9, "{json}");
}

#[tokio::test]
async fn client_retries_amplify_upstream_requests() {
    let upstream = start(UpstreamConfig {
        fault: Fault::http_error(1.0, StatusCode::SERVICE_UNAVAILABLE),
        ..UpstreamConfig::new("failing")
    })
    .await;
    let config = LoadConfig {
        connections: 8,
        retry: RetryPolicy {
            max_retries: 2,
            backoff: Duration::from_millis(1),
        },
        ..LoadConfig::new(
            upstream.addr(),
            Protocol::Http1,
            200.0,
            Duration::from_millis(500),
        )
    };
    let report = load::run(&config).await.unwrap();
    assert_eq!(report.totals.requests, 100);
    assert_eq!(report.totals.errors.http_5xx.get(&503), Some(&100));
    assert_eq!(report.attempts, 300);
    assert_eq!(report.client_retries, 200);
    assert_eq!(upstream.counters().received, 300);
    assert_eq!(report.upstream_amplification([&upstream.counters()]), 3.0);
}

#[tokio::test]
async fn grpc_load_reports_status_by_name() {
    let upstream = start(UpstreamConfig::new("grpc-load")).await;
    let config = LoadConfig {
        connections: 2,
        ..LoadConfig::new(
            upstream.addr(),
            Protocol::Grpc,
            200.0,
            Duration::from_millis(250),
        )
    };
    let healthy = load::run(&config).await.unwrap();
    assert_eq!(
        (healthy.totals.requests, healthy.totals.successes),
        (50, 50)
    );

    upstream.set_fault(Fault::grpc_error(
        1.0,
        tonic::Code::Unavailable,
        GrpcStatusDelivery::Trailers,
    ));
    let failing = load::run(&config).await.unwrap();
    assert_eq!(failing.totals.successes, 0);
    assert_eq!(failing.totals.errors.grpc.get("Unavailable"), Some(&50));
    assert_eq!(upstream.counters().received, 100);
}

#[tokio::test]
async fn request_classes_split_traffic_and_carry_their_headers() {
    let upstream = start(UpstreamConfig::new("classes")).await;
    // The upstream counts requests with x-envoy-attempt-count > 1 as retries: a visible marker header.
    let config = LoadConfig {
        classes: vec![
            RequestClass::new("marked", 1, &[("x-envoy-attempt-count", "2")]),
            RequestClass::new("plain", 4, &[]),
        ],
        ..LoadConfig::new(
            upstream.addr(),
            Protocol::Http2,
            400.0,
            Duration::from_millis(250),
        )
    };
    let report = load::run(&config).await.unwrap();
    assert_eq!(report.classes["marked"].requests, 20);
    assert_eq!(report.classes["plain"].requests, 80);
    assert_eq!(report.classes["marked"].successes, 20);
    // Every success is tallied under the upstream that answered it.
    assert_eq!(
        report.classes["marked"].responders,
        [("classes".to_owned(), 20)].into()
    );
    assert_eq!(report.totals.responders["classes"], 100);
    let counters = upstream.counters();
    assert_eq!((counters.received, counters.retries), (100, 20));
}

#[tokio::test]
async fn timeouts_and_client_drops_are_classified() {
    let upstream = start(UpstreamConfig {
        fault: Fault::stall(),
        ..UpstreamConfig::new("black-hole")
    })
    .await;
    // 20 requests due over 200 ms; at most 5 outstanding, each timing out after 300 ms.
    let config = LoadConfig {
        timeout: Duration::from_millis(300),
        max_outstanding: 5,
        ..LoadConfig::new(
            upstream.addr(),
            Protocol::Http2,
            100.0,
            Duration::from_millis(200),
        )
    };
    let report = load::run(&config).await.unwrap();
    let errors = &report.totals.errors;
    assert_eq!(
        (errors.timeout, errors.client_dropped),
        (5, 15),
        "{errors:?}"
    );
    assert_eq!(report.sent_requests(), 5);
    let latency = report.totals.latency_all;
    assert!((299.0..400.0).contains(&latency.p50_ms), "{latency:?}");
}

#[tokio::test]
async fn connect_errors_are_classified() {
    let mut upstream = start(UpstreamConfig::new("gone")).await;
    upstream.kill().await;
    for protocol in [Protocol::Http1, Protocol::Http2, Protocol::Grpc] {
        let config = LoadConfig {
            connections: 2,
            ..LoadConfig::new(upstream.addr(), protocol, 100.0, Duration::from_millis(100))
        };
        let report = load::run(&config).await.unwrap();
        assert_eq!(
            report.totals.errors.connect, 10,
            "{protocol:?}: {:?}",
            report.totals.errors
        );
        assert_eq!(report.achieved_rps, 0.0);
    }
}

#[tokio::test]
async fn non_loopback_targets_are_refused() {
    let target: SocketAddr = "192.0.2.1:80".parse().unwrap();
    let config = LoadConfig::new(target, Protocol::Http1, 10.0, Duration::from_secs(1));
    assert!(matches!(
        load::run(&config).await,
        Err(LoadError::NonLoopbackTarget(refused)) if refused == target
    ));
}

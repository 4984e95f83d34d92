//! sandbox_router.wasm in the real Envoy (build it first with `cargo xtask build`), routing
//! between a baseline and two sandbox deployments (lab upstreams) through the topology of
//! `mesh_lab::scenario::sandbox` (each sandbox behind an aggregate cluster `[sandbox, baseline]`
//! retried with `previous_priorities`): keys in a header or W3C baggage reach their sandbox,
//! unknown keys the baseline; keys from an untrusted source (a client bound to 127.0.0.2) and
//! spoofed routing headers never pick a cluster, and the upstream sees neither the key header nor
//! the baggage member (on any of several `baggage` lines); a sandbox killed mid-run or answering
//! 503 is served by the baseline with no client error; sandboxes added to and removed from the
//! dynamic registry (served by a lab upstream) are picked up within a refresh interval, and a
//! failing registry keeps the last good list. Every test checks the filter's metrics in
//! `/stats/prometheus`.
//!
//! Each test runs its own Envoy (two workers); `shutdown()` fails the test on any wasm panic or
//! trap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use mesh_envoy_harness::{EnvoyOptions, EnvoyProcess};
use mesh_lab::keepalive::exchange;
use mesh_lab::scenario::sandbox::{
    bootstrap, fallback_cluster, registry_document, sandbox_cluster, Deployments, Routing,
    BASELINE, KEY_HEADER, REGISTRY_CLUSTER, REGISTRY_PATH, ROUTING_HEADER,
};
use mesh_lab::scenario::INGRESS_LISTENER;
use mesh_lab::upstream::{
    EchoedRequest, Fault, ServiceTime, Upstream, UpstreamConfig, UpstreamHandle,
    UPSTREAM_NAME_HEADER,
};

/// How long to wait for an event: a stat, an upstream state, a response.
const WAIT: Duration = Duration::from_secs(10);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);
const TRUSTED: Ipv4Addr = Ipv4Addr::LOCALHOST;
const UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The dynamic registry's refresh interval in the registry test.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The admin name of a sandbox-router metric.
fn stat(metric: &str) -> String {
    format!("wasmcustom.mesh.sandbox_router.{metric}")
}

/// A baseline, sandboxes `alpha` and `beta` (the sandboxes' requests take `sandbox_time`), a
/// registry, and Envoy (two workers) routing between them with the filter configured by `config`.
struct Lab {
    runtime: tokio::runtime::Runtime,
    baseline: UpstreamHandle,
    alpha: UpstreamHandle,
    beta: UpstreamHandle,
    registry: UpstreamHandle,
    envoy: EnvoyProcess,
    ingress: SocketAddr,
}

impl Lab {
    fn start(config: Value, sandbox_time: Duration) -> Lab {
        let runtime = mesh_lab::runtime().unwrap();
        let sandbox = |name: &str| UpstreamConfig {
            service_time: ServiceTime::Constant(sandbox_time),
            ..UpstreamConfig::new(sandbox_cluster(name))
        };
        let (baseline, alpha, beta, registry) = runtime.block_on(async {
            (
                Upstream::start(UpstreamConfig::new(BASELINE))
                    .await
                    .unwrap(),
                Upstream::start(sandbox("alpha")).await.unwrap(),
                Upstream::start(sandbox("beta")).await.unwrap(),
                Upstream::start(UpstreamConfig::new("registry"))
                    .await
                    .unwrap(),
            )
        });
        registry.set_document(REGISTRY_PATH, registry_document(&[]));
        let deployments = Deployments {
            baseline: baseline.addr(),
            sandboxes: vec![("alpha".into(), alpha.addr()), ("beta".into(), beta.addr())],
            registry: Some(registry.addr()),
        };
        let bootstrap =
            bootstrap(&deployments, &Routing::Filter(config)).unwrap_or_else(|err| panic!("{err}"));
        let options = EnvoyOptions {
            concurrency: 2,
            ..EnvoyOptions::default()
        };
        let envoy = EnvoyProcess::start(&bootstrap, options).unwrap_or_else(|err| panic!("{err}"));
        let ingress = envoy.listener_addr(INGRESS_LISTENER).unwrap();
        Lab {
            runtime,
            baseline,
            alpha,
            beta,
            registry,
            envoy,
            ingress,
        }
    }

    /// `GET /` with `headers` on a new connection from `source`.
    fn get(&self, source: Ipv4Addr, headers: &[(&str, &str)]) -> Served {
        self.runtime
            .block_on(get(self.ingress, source, headers))
            .unwrap_or_else(|err| panic!("{headers:?} from {source}: {err}"))
    }

    /// Polls `GET /` with `headers` until `upstream` serves it; how long that took.
    fn await_served_by(&self, headers: &[(&str, &str)], upstream: &str) -> Duration {
        let started = Instant::now();
        loop {
            if self.get(TRUSTED, headers).upstream == upstream {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < WAIT,
                "{headers:?} never served by {upstream}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// The value of `mesh_sandbox_router_<metric>` in `/stats/prometheus`.
    fn prometheus(&self, metric: &str) -> Option<f64> {
        self.envoy
            .prometheus_value(&format!("mesh_sandbox_router_{metric}"))
            .unwrap()
    }
}

/// What a client saw of one request.
#[derive(Debug)]
struct Served {
    status: StatusCode,
    /// The upstream that answered.
    upstream: String,
    /// Envoy's attempts (`x-envoy-attempt-count`).
    attempts: u32,
    /// The request as that upstream saw it.
    seen: EchoedRequest,
}

async fn get(
    ingress: SocketAddr,
    source: Ipv4Addr,
    headers: &[(&str, &str)],
) -> Result<Served, String> {
    let mut request = Request::get("/").header("host", "service");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (status, headers, body) = exchange(
        source,
        ingress,
        request.body(Empty::<Bytes>::new()).unwrap(),
    )
    .await?;
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let seen = serde_json::from_slice(&body)
        .map_err(|err| format!("status {status}, body {body:?}: {err}"))?;
    Ok(Served {
        status,
        upstream: header(UPSTREAM_NAME_HEADER).unwrap_or_default(),
        attempts: header("x-envoy-attempt-count").map_or(1, |n| n.parse().unwrap()),
        seen,
    })
}

#[test]
fn keys_in_a_header_or_baggage_route_and_untrusted_or_spoofed_ones_reach_the_baseline_clean() {
    let config = json!({
        "sandboxes": {"alpha": fallback_cluster("alpha"), "beta": fallback_cluster("beta")},
        "trusted_sources": ["127.0.0.1/32"],
    });
    let lab = Lab::start(config, Duration::ZERO);
    let (alpha, beta) = (sandbox_cluster("alpha"), sandbox_cluster("beta"));

    let by_header = lab.get(TRUSTED, &[(KEY_HEADER, "alpha")]);
    assert_eq!(
        (by_header.status, by_header.upstream.as_str()),
        (StatusCode::OK, alpha.as_str())
    );
    assert_eq!(by_header.attempts, 1);
    assert_eq!(
        by_header.seen.headers.get(KEY_HEADER).map(String::as_str),
        Some("alpha"),
        "a trusted key travels on"
    );
    let by_baggage = lab.get(
        TRUSTED,
        &[("baggage", "userId=alice, sandbox = beta;origin=edge")],
    );
    assert_eq!(by_baggage.upstream, beta);
    assert_eq!(
        by_baggage.seen.headers["baggage"],
        "userId=alice, sandbox = beta;origin=edge"
    );
    let header_first = lab.get(
        TRUSTED,
        &[(KEY_HEADER, "alpha"), ("baggage", "sandbox=beta")],
    );
    assert_eq!(
        header_first.upstream, alpha,
        "the header is the first key source"
    );
    let unknown = lab.get(TRUSTED, &[(KEY_HEADER, "gamma")]);
    assert_eq!(
        (unknown.status, unknown.upstream.as_str()),
        (StatusCode::OK, BASELINE)
    );

    // From an untrusted source the key picks nothing and never reaches the application.
    let untrusted = lab.get(
        UNTRUSTED,
        &[
            (KEY_HEADER, "alpha"),
            ("baggage", "userId=alice,sandbox=alpha"),
        ],
    );
    assert_eq!(untrusted.upstream, BASELINE);
    assert_eq!(untrusted.seen.headers.get(KEY_HEADER), None);
    assert_eq!(untrusted.seen.headers["baggage"], "userId=alice");

    // Baggage sent on several lines is one list: a key on any line routes, or is stripped.
    let lines = [("baggage", "userId=alice"), ("baggage", "sandbox=beta")];
    assert_eq!(lab.get(TRUSTED, &lines).upstream, beta);
    let untrusted_lines = lab.get(UNTRUSTED, &lines);
    assert_eq!(untrusted_lines.upstream, BASELINE);
    assert_eq!(untrusted_lines.seen.headers["baggage"], "userId=alice");

    // A routing header sent by a client never picks a cluster, from any source.
    let spoof = fallback_cluster("alpha");
    for source in [TRUSTED, UNTRUSTED] {
        let spoofed = lab.get(source, &[(ROUTING_HEADER, &spoof)]);
        assert_eq!(spoofed.upstream, BASELINE, "from {source}");
        assert_eq!(spoofed.seen.headers.get(ROUTING_HEADER), None);
    }
    let spoofed_with_key = lab.get(TRUSTED, &[(ROUTING_HEADER, &spoof), (KEY_HEADER, "beta")]);
    assert_eq!(spoofed_with_key.upstream, beta);
    assert_eq!(
        spoofed_with_key.seen.headers[ROUTING_HEADER],
        fallback_cluster("beta"),
        "the filter's cluster from the registry, not the client's"
    );

    let counts = |upstream: &UpstreamHandle| upstream.counters().received;
    assert_eq!(
        (counts(&lab.alpha), counts(&lab.beta), counts(&lab.baseline)),
        (2, 3, 5)
    );
    lab.envoy
        .wait_for_stat(&stat("untrusted_stripped"), WAIT, |n| n == 2)
        .unwrap();
    for (metric, value) in [
        ("routed_alpha", 2.0),
        ("routed_beta", 3.0),
        ("unknown_key", 1.0),
        ("untrusted_stripped", 2.0),
        ("fallback_to_baseline", 0.0),
        ("routed_unlisted", 0.0),
        ("registry_size", 2.0),
    ] {
        assert_eq!(lab.prometheus(metric), Some(value), "{metric}");
    }
    lab.envoy.shutdown();
}

#[test]
fn a_sandbox_killed_mid_run_or_answering_503_falls_back_to_the_baseline_without_a_client_error() {
    const CLIENTS: usize = 4;
    /// Fallbacks to see while the sandbox is down, and while it answers 503.
    const FALLBACKS: usize = 20;
    let config = json!({
        "sandboxes": {"alpha": fallback_cluster("alpha")},
        "trusted_sources": ["127.0.0.1/32"],
    });
    // Slow sandbox requests, so some are in flight when it is killed.
    let mut lab = Lab::start(config, Duration::from_millis(50));
    let alpha = sandbox_cluster("alpha");
    let stop = Arc::new(AtomicBool::new(false));
    let (served_tx, mut served) = mpsc::unbounded_channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, served_tx, ingress) = (Arc::clone(&stop), served_tx.clone(), lab.ingress);
            lab.runtime.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let answer = get(ingress, TRUSTED, &[(KEY_HEADER, "alpha")]).await;
                    served_tx.send(answer).unwrap();
                }
            })
        })
        .collect();
    drop(served_tx);
    let mut answers = Vec::new();
    let mut next = |answers: &mut Vec<Result<Served, String>>| {
        let answer = lab
            .runtime
            .block_on(async { tokio::time::timeout(WAIT, served.recv()).await })
            .expect("the clients keep being answered")
            .unwrap();
        let upstream = answer
            .as_ref()
            .map(|a| a.upstream.clone())
            .unwrap_or_default();
        answers.push(answer);
        upstream
    };

    // Hold the sandbox's requests so that some are surely in flight at the kill.
    while next(&mut answers) != alpha {}
    lab.alpha.set_fault(Fault::stall());
    let started = Instant::now();
    while lab.alpha.counters().in_flight < 2 {
        assert!(
            started.elapsed() < WAIT,
            "the sandbox never had requests in flight"
        );
        lab.runtime
            .block_on(async { tokio::time::sleep(Duration::from_millis(5)).await });
    }
    lab.runtime.block_on(lab.alpha.kill());
    lab.alpha.clear_fault();
    let mut fallbacks = 0;
    while fallbacks < FALLBACKS {
        if next(&mut answers) == BASELINE {
            fallbacks += 1;
        }
    }
    lab.runtime.block_on(lab.alpha.restart()).unwrap();
    while next(&mut answers) != alpha {}
    // A sandbox answering 503 falls back the same way.
    lab.alpha
        .set_fault(Fault::http_error(1.0, StatusCode::SERVICE_UNAVAILABLE));
    let mut fallbacks = 0;
    while fallbacks < FALLBACKS {
        if next(&mut answers) == BASELINE {
            fallbacks += 1;
        }
    }
    lab.alpha.clear_fault();
    while next(&mut answers) != alpha {}
    stop.store(true, Ordering::SeqCst);
    lab.runtime.block_on(async {
        for client in clients {
            client.await.unwrap();
        }
        while let Some(answer) = served.recv().await {
            answers.push(answer);
        }
    });

    let answers: Vec<Served> = answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|err| panic!("a client request failed: {err}")))
        .collect();
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        let expected = if answer.attempts == 1 {
            &alpha
        } else {
            BASELINE
        };
        assert_eq!(answer.upstream, expected, "{answer:?}");
    }
    let retried = answers.iter().filter(|a| a.attempts > 1).count() as u64;
    assert!(retried >= FALLBACKS as u64, "{retried}");
    // The requests in flight at the kill were reset and served by the baseline too.
    let alpha_counters = lab.alpha.counters();
    assert!(
        alpha_counters.received > alpha_counters.completed,
        "nothing was in flight at the kill: {alpha_counters:?}"
    );
    lab.envoy
        .wait_for_stat(&stat("fallback_to_baseline"), WAIT, |n| n == retried)
        .unwrap();
    assert_eq!(lab.prometheus("fallback_to_baseline"), Some(retried as f64));
    assert_eq!(lab.prometheus("routed_alpha"), Some(answers.len() as f64));
    assert_eq!(lab.baseline.counters().received, retried);
    lab.envoy.shutdown();
}

#[test]
fn registry_adds_and_removes_are_picked_up_within_a_refresh_interval_and_failures_keep_the_list() {
    let config = json!({
        "trusted_sources": ["127.0.0.1/32"],
        "registry": {
            "cluster": REGISTRY_CLUSTER,
            "path": REGISTRY_PATH,
            "refresh_interval_ms": REFRESH_INTERVAL.as_millis() as u64,
            "timeout_ms": 500,
        },
    });
    let lab = Lab::start(config, Duration::ZERO);
    let beta = sandbox_cluster("beta");
    let key = [(KEY_HEADER, "beta")];
    lab.envoy
        .wait_for_stat(&stat("registry_refresh_ok"), WAIT, |n| n >= 1)
        .unwrap();
    assert_eq!(
        lab.get(TRUSTED, &key).upstream,
        BASELINE,
        "not registered yet"
    );

    // The filter fetches once per interval and adopts the answer on its next tick (a quarter
    // interval): a change is picked up within an interval and a tick. Asserted with slack for a
    // busy machine: two intervals.
    lab.registry
        .set_document(REGISTRY_PATH, registry_document(&["beta"]));
    let added = lab.await_served_by(&key, &beta);
    eprintln!("registry add picked up after {added:?}");
    assert!(added <= 2 * REFRESH_INTERVAL, "added after {added:?}");
    lab.envoy
        .wait_for_stat(&stat("registry_size"), WAIT, |n| n == 1)
        .unwrap();

    // A failing registry keeps the last good list.
    let failed_before = lab.envoy.stat(&stat("registry_refresh_failed")).unwrap();
    assert_eq!(failed_before, Some(0));
    lab.registry
        .set_fault(Fault::http_error(1.0, StatusCode::SERVICE_UNAVAILABLE));
    lab.envoy
        .wait_for_stat(&stat("registry_refresh_failed"), WAIT, |n| n >= 1)
        .unwrap();
    assert_eq!(lab.get(TRUSTED, &key).upstream, beta, "the last good list");
    lab.registry.clear_fault();

    lab.registry
        .set_document(REGISTRY_PATH, registry_document(&[]));
    let removed = lab.await_served_by(&key, BASELINE);
    eprintln!("registry removal picked up after {removed:?}");
    assert!(removed <= 2 * REFRESH_INTERVAL, "removed after {removed:?}");
    lab.envoy
        .wait_for_stat(&stat("registry_size"), WAIT, |n| n == 0)
        .unwrap();

    assert!(lab.prometheus("routed_beta").unwrap() >= 1.0);
    assert!(lab.prometheus("unknown_key").unwrap() >= 2.0);
    assert!(lab.prometheus("registry_refresh_ok").unwrap() >= 3.0);
    assert!(lab.prometheus("registry_refresh_failed").unwrap() >= 1.0);
    assert_eq!(lab.prometheus("registry_size"), Some(0.0));
    lab.envoy.shutdown();
}

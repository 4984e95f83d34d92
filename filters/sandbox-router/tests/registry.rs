//! The dynamic registry on several workers (fake hosts sharing one store, one clock moved in
//! step): one fetch per interval across workers, the list shared, the last good list kept on
//! failure, garbage and refusals, static entries winning, add and remove picked up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::headers::HeaderMapKind;
use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::FakeHost;
use meshkit::kit::{Chain, MemberFactory};
use meshkit::shared::MemoryStore;
use sandbox_router::SandboxRouter;
use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = r#"{"sandboxes": {"fixed": "sandbox_fixed"},
    "registry": {"cluster": "registry", "path": "/sandboxes", "refresh_interval_ms": 1000, "timeout_ms": 200},
    "trusted_sources": ["127.0.0.1/32"]}"#;
const TICK: Duration = Duration::from_millis(250);

struct Workers {
    hosts: Vec<FakeHost>,
    chains: Vec<Chain>,
}

impl Workers {
    fn start(count: usize, config: &str) -> Workers {
        let store = Arc::new(MemoryStore::new());
        let hosts: Vec<FakeHost> = (0..count)
            .map(|_| FakeHost::with_store(Arc::clone(&store)))
            .collect();
        let chains = hosts
            .iter()
            .map(|host| {
                Chain::standalone(
                    MemberFactory::of::<SandboxRouter>(),
                    Some(config.as_bytes()),
                    host,
                    "sandbox-router",
                )
                .unwrap()
            })
            .collect();
        Workers { hosts, chains }
    }

    /// Moves every worker's clock by `by`, then ticks each.
    fn tick(&mut self, by: Duration) {
        for (host, chain) in self.hosts.iter().zip(&mut self.chains) {
            host.advance(by);
            chain.on_tick(host);
        }
    }

    /// Every callout dispatched so far, by worker.
    fn calls(&self) -> Vec<(usize, u32)> {
        self.hosts
            .iter()
            .enumerate()
            .flat_map(|(worker, host)| {
                host.dispatched_calls()
                    .into_iter()
                    .map(move |call| (worker, call.token))
            })
            .collect()
    }

    /// Answers the last callout with `status` and `body` (or a failure when `status` is None).
    fn answer(&mut self, status: Option<&str>, body: &str) {
        let &(worker, token) = self.calls().last().unwrap();
        let host = &self.hosts[worker];
        match status {
            Some(status) => host.set_http_call_response(&[(":status", status)], body.as_bytes()),
            None => host.set_http_call_failure(),
        }
        self.chains[worker].on_http_call_response(host, token);
    }

    /// The cluster worker `worker` routes key `key` to.
    fn route(&mut self, worker: usize, key: &str) -> Option<String> {
        let host = &self.hosts[worker];
        host.set_property(&["source", "address"], b"127.0.0.1:1");
        host.set_request_headers(&[(":path", "/"), ("x-sandbox", key)]);
        self.chains[worker].on_request_headers(host, &mut ChainStream::default());
        host.header_of(HeaderMapKind::RequestHeaders, "x-mesh-sandbox-cluster")
            .map(|value| String::from_utf8(value).unwrap())
    }

    fn counter(&self, name: &str) -> u64 {
        // Each fake host counts its own worker's increments; Envoy sums them in one stat.
        self.hosts
            .iter()
            .map(|host| host.counter(&format!("mesh.sandbox_router.{name}")))
            .sum()
    }
}

#[test]
fn one_fetch_per_interval_across_workers_and_everyone_adopts_the_list() {
    let mut workers = Workers::start(4, CONFIG);
    assert_eq!(workers.chains[0].tick_period(), Some(TICK));
    workers.tick(TICK);
    let calls = workers.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &workers.hosts[calls[0].0].dispatched_calls()[0];
    assert_eq!(call.upstream, "registry");
    assert_eq!(call.header(":path"), Some(&b"/sandboxes"[..]));
    assert_eq!(call.header(":method"), Some(&b"GET"[..]));
    assert_eq!(call.timeout, Duration::from_millis(200));
    workers.answer(
        Some("200"),
        r#"[{"name": "feature-x", "cluster": "sandbox_x"}]"#,
    );
    workers.tick(TICK);
    for worker in 0..4 {
        assert_eq!(
            workers.route(worker, "feature-x").as_deref(),
            Some("sandbox_x")
        );
        assert_eq!(
            workers.route(worker, "fixed").as_deref(),
            Some("sandbox_fixed")
        );
        let size = workers.hosts[worker].gauge("mesh.sandbox_router.registry_size");
        assert_eq!(size, Some(2), "worker {worker}");
    }
    // Ten intervals of ticks on every worker: one fetch per interval.
    for _ in 0..40 {
        workers.tick(TICK);
        if workers.calls().len() > workers.counter("registry_refresh_ok") as usize {
            workers.answer(
                Some("200"),
                r#"[{"name": "feature-x", "cluster": "sandbox_x"}]"#,
            );
        }
    }
    assert_eq!(workers.calls().len(), 11);
    assert_eq!(workers.counter("registry_refresh_ok"), 11);
}

#[test]
fn the_last_good_list_is_kept_on_failure_garbage_and_errors() {
    let mut workers = Workers::start(2, CONFIG);
    workers.tick(TICK);
    workers.answer(
        Some("200"),
        r#"[{"name": "feature-x", "cluster": "sandbox_x"}]"#,
    );
    for (status, body) in [
        (None, ""),
        (Some("503"), "[]"),
        (Some("200"), "<html>oops</html>"),
        (
            Some("200"),
            r#"[{"name": "feature-x", "cluster": "evil cluster"}]"#,
        ),
    ] {
        let before = workers.calls().len();
        for _ in 0..4 {
            workers.tick(TICK);
        }
        assert_eq!(workers.calls().len(), before + 1);
        workers.answer(status, body);
        workers.tick(TICK);
        for worker in 0..2 {
            assert_eq!(
                workers.route(worker, "feature-x").as_deref(),
                Some("sandbox_x"),
                "{body}"
            );
        }
    }
    assert_eq!(workers.counter("registry_refresh_failed"), 4);
    assert_eq!(workers.counter("registry_refresh_ok"), 1);
}

#[test]
fn adds_and_removes_are_picked_up_within_one_interval() {
    let mut workers = Workers::start(3, CONFIG);
    workers.tick(TICK);
    workers.answer(Some("200"), r#"[{"name": "a", "cluster": "sandbox_a"}]"#);
    // The registry changes right after that fetch: within one interval (4 ticks) plus the tick
    // that adopts it, every worker routes by the new list.
    for _ in 0..4 {
        workers.tick(TICK);
    }
    workers.answer(Some("200"), r#"[{"name": "b", "cluster": "sandbox_b"}]"#);
    workers.tick(TICK);
    for worker in 0..3 {
        assert_eq!(workers.route(worker, "b").as_deref(), Some("sandbox_b"));
        assert_eq!(workers.route(worker, "a"), None, "removed");
        assert_eq!(
            workers.route(worker, "fixed").as_deref(),
            Some("sandbox_fixed")
        );
    }
}

#[test]
fn static_entries_win_over_the_registry() {
    let mut workers = Workers::start(1, CONFIG);
    workers.tick(TICK);
    workers.answer(Some("200"), r#"[{"name": "fixed", "cluster": "hijacked"}]"#);
    assert_eq!(workers.route(0, "fixed").as_deref(), Some("sandbox_fixed"));
}

#[test]
fn a_refused_dispatch_is_a_failure_retried_next_interval() {
    let mut workers = Workers::start(2, CONFIG);
    for host in &workers.hosts {
        host.refuse_cluster("registry");
    }
    workers.tick(TICK);
    assert_eq!(workers.counter("registry_refresh_failed"), 1);
    workers.tick(TICK);
    assert_eq!(
        workers.counter("registry_refresh_failed"),
        1,
        "not before the interval"
    );
    for _ in 0..3 {
        workers.tick(TICK);
    }
    assert_eq!(workers.counter("registry_refresh_failed"), 2);
}

#[test]
fn a_lost_fetch_expires_its_lease_and_is_claimed_again() {
    for count in [1, 2] {
        let mut workers = Workers::start(count, CONFIG);
        workers.tick(TICK);
        assert_eq!(workers.calls().len(), 1);
        // Never answered (lost with a reloaded VM): after the interval another claim, even by
        // the same worker.
        for _ in 0..4 {
            workers.tick(TICK);
        }
        assert_eq!(workers.calls().len(), 2, "{:?}", workers.calls());
        workers.answer(Some("200"), r#"[{"name": "a", "cluster": "sandbox_a"}]"#);
        assert_eq!(workers.route(0, "a").as_deref(), Some("sandbox_a"));
    }
}

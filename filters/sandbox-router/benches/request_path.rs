//! Cost of the per-request path: the pure decision for the common request shapes (no key, a
//! header key, a baggage key among tracing members, a signed key, an untrusted key), and one
//! whole request through the filter on the fake host (header reads, routing header set).

use criterion::{criterion_group, criterion_main, Criterion};
use meshkit::config::load_config;
use meshkit::kit::chain::ChainStream;
use meshkit::kit::fake::FakeHost;
use meshkit::kit::{Chain, MemberFactory};
use sandbox_router::config::SandboxConfig;
use sandbox_router::key::Signer;
use sandbox_router::policy::{Policy, RequestKeys};
use sandbox_router::registry::Registry;
use sandbox_router::SandboxRouter;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

const CONFIG: &str = r#"{
    "sandboxes": {"feature-x": "sandbox_feature_x", "feature-y": "sandbox_feature_y"},
    "trusted_sources": ["127.0.0.1/32"],
    "signing_secret": "0123456789abcdef0123456789abcdef"
}"#;

fn decide(c: &mut Criterion) {
    let config: SandboxConfig = load_config(Some(CONFIG.as_bytes())).unwrap_or_default();
    let policy = Policy::new(&config);
    let registry = Registry::new(config.sandboxes.clone());
    let trusted = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let untrusted = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let tracing = b"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7, sandbox=feature-x;ttl=60";
    let signed = Signer::new(b"0123456789abcdef0123456789abcdef")
        .map(|signer| signer.sign("feature-y"))
        .unwrap_or_default();
    let cases: [(&str, RequestKeys<'_>); 5] = [
        ("no key", RequestKeys::default()),
        (
            "header key",
            RequestKeys {
                header: Some(b"feature-x"),
                source: trusted,
                ..RequestKeys::default()
            },
        ),
        (
            "baggage key",
            RequestKeys {
                baggage: Some(tracing),
                source: trusted,
                ..RequestKeys::default()
            },
        ),
        (
            "signed key",
            RequestKeys {
                header: Some(signed.as_bytes()),
                source: untrusted,
                ..RequestKeys::default()
            },
        ),
        (
            "untrusted baggage",
            RequestKeys {
                baggage: Some(tracing),
                source: untrusted,
                ..RequestKeys::default()
            },
        ),
    ];
    for (name, keys) in cases {
        c.bench_function(&format!("decide: {name}"), |b| {
            b.iter(|| black_box(policy.decide(black_box(&keys), &registry)))
        });
    }
}

fn whole_request(c: &mut Criterion) {
    let host = FakeHost::new();
    let Ok(mut chain) = Chain::standalone(
        MemberFactory::of::<SandboxRouter>(),
        Some(CONFIG.as_bytes()),
        &host,
        "sandbox-router",
    ) else {
        return;
    };
    host.set_property(&["source", "address"], b"127.0.0.1:40000");
    c.bench_function("request: baggage key routed (fake host)", |b| {
        b.iter(|| {
            host.set_request_headers(&[
                (":path", "/"),
                ("baggage", "rojo=00f067aa0ba902b7,sandbox=feature-x"),
            ]);
            let mut stream = ChainStream::default();
            black_box(chain.on_request_headers(&host, &mut stream));
            chain.on_stream_end(&host, &mut stream);
        })
    });
}

criterion_group!(benches, decide, whole_request);
criterion_main!(benches);

//! `mesh-bootstrap xds` against the real Envoy: one Envoy started on the file-based xDS output of
//! a spec picks up a new egress dependency when the spec gains it and the files are re-written
//! (CDS first, LDS once Envoy has warmed the new cluster), then drops the old one (LDS first,
//! then CDS), routing to each dependency exactly while the spec declares it, with no update
//! rejected: the seed's LDS/CDS race cannot happen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "e2e/upstream.rs"]
mod upstream;

use envoy_configs::compose::render::{render, RenderOptions};
use envoy_configs::compose::spec::{ServiceSpec, SpecFormat};
use envoy_configs::compose::xds;
use mesh_envoy_harness::{reserve_port, EnvoyOptions, EnvoyProcess};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// How long Envoy gets to accept and warm each update, and counters to land.
const WAIT: Duration = Duration::from_secs(30);

struct Ports {
    app: u16,
    ingress: u16,
    egress: u16,
    admin: u16,
    prometheus: u16,
}

/// A spec with no filters (the ordering, not the modules, is under test) calling `dependencies`
/// (name, upstream) over HTTP/1.1.
fn spec(ports: &Ports, dependencies: &[(&str, SocketAddr)]) -> ServiceSpec {
    let mut yaml = format!(
        "service: orders\napp: {{port: {}, protocol: http1}}\ningress: {{port: {}}}\n\
         egress: {{port: {}}}\nadmin: {{port: {}, prometheus_port: {}}}\ndependencies:\n",
        ports.app, ports.ingress, ports.egress, ports.admin, ports.prometheus
    );
    for (name, upstream) in dependencies {
        yaml.push_str(&format!(
            "  - {{name: {name}, address: \"{}\", port: {}, protocol: http1, timeout_ms: 5000}}\n",
            upstream.ip(),
            upstream.port()
        ));
    }
    ServiceSpec::parse(&yaml, SpecFormat::Yaml).unwrap()
}

fn write_xds(spec: &ServiceSpec, dir: &Path) -> xds::Written {
    let rendered = render(spec, &RenderOptions::default()).unwrap();
    xds::write(&rendered, dir, WAIT).unwrap_or_else(|err| panic!("{err}"))
}

/// The status of `GET /` with `Host: host` through the egress listener.
fn status_via_egress(egress: u16, host: &str) -> u16 {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, egress)).unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

fn counter(envoy: &EnvoyProcess, name: &str) -> u64 {
    envoy
        .stat(name)
        .unwrap()
        .unwrap_or_else(|| panic!("Envoy has no stat {name}"))
}

fn assert_nothing_rejected(envoy: &EnvoyProcess) {
    for name in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        assert_eq!(counter(envoy, name), 0, "{name}\n{}", envoy.log());
    }
}

#[test]
fn a_running_envoy_picks_up_a_new_dependency_and_drops_an_old_one_without_a_rejected_update() {
    let reserve = || reserve_port().unwrap();
    let ports = Ports {
        app: reserve(),
        ingress: reserve(),
        egress: reserve(),
        admin: reserve(),
        prometheus: reserve(),
    };
    let alpha = upstream::start();
    let beta = upstream::start_on(Ipv4Addr::new(127, 0, 0, 2));
    let dir = tempfile::tempdir().unwrap();

    let first = write_xds(&spec(&ports, &[("alpha", alpha)]), dir.path());
    assert!(!first.envoy_running, "{:?}", first.steps);
    let envoy = EnvoyProcess::start(&first.bootstrap, EnvoyOptions::default())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(status_via_egress(ports.egress, "alpha"), 200);
    assert_eq!(status_via_egress(ports.egress, "beta"), 404);

    let cds_updates = counter(&envoy, "cluster_manager.cds.update_success");
    let lds_updates = counter(&envoy, "listener_manager.lds.update_success");
    let added = write_xds(
        &spec(&ports, &[("alpha", alpha), ("beta", beta)]),
        dir.path(),
    );
    assert!(added.envoy_running);
    assert!(
        added
            .steps
            .iter()
            .any(|step| step.starts_with("cds.yaml: written"))
            && added
                .steps
                .iter()
                .any(|step| step.starts_with("lds.yaml: written")),
        "{:?}",
        added.steps
    );
    assert!(counter(&envoy, "cluster_manager.cds.update_success") > cds_updates);
    assert!(counter(&envoy, "listener_manager.lds.update_success") > lds_updates);
    assert_eq!(status_via_egress(ports.egress, "beta"), 200);
    envoy
        .wait_for_stat("cluster.egress_beta.upstream_rq_200", WAIT, |n| n >= 1)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(status_via_egress(ports.egress, "alpha"), 200);
    assert_nothing_rejected(&envoy);

    let removed = write_xds(&spec(&ports, &[("beta", beta)]), dir.path());
    let last = removed.steps.last().unwrap();
    assert!(
        last.starts_with("cds.yaml: written")
            && last.contains("removed, as no route names them now: egress_alpha"),
        "{:?}",
        removed.steps
    );
    assert_eq!(status_via_egress(ports.egress, "alpha"), 404);
    assert_eq!(status_via_egress(ports.egress, "beta"), 200);
    assert!(!envoy
        .admin_get("/clusters")
        .unwrap()
        .contains("egress_alpha::"));
    assert_nothing_rejected(&envoy);
    envoy.shutdown();
}

//! Every named scenario runs end to end (real Envoy, upstream, load) in a two-second smoke run, so none
//! of the benchmarks rots between the runs that measure with them, and shows the directions it expects
//! (e.g. our filter sheds in overload and never below capacity; a retry budget amplifies less than none;
//! cacheable calls reach the cache and no other call does; no unkeyed request reaches a sandbox).
#![allow(clippy::panic)]

use std::time::Duration;

use mesh_lab::scenario::{self, RunMode, NAMES};

#[test]
fn every_scenario_runs_end_to_end_in_a_smoke_run() {
    let mode = RunMode::Smoke {
        total: Duration::from_secs(2),
    };
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    for name in NAMES {
        let scenario =
            scenario::by_name(name).unwrap_or_else(|| panic!("{name} is listed but unknown"));
        let report =
            scenario::run(&scenario, mode).unwrap_or_else(|e| panic!("scenario {name}: {e}"));
        assert!(report.smoke);
        for variant in &scenario.variants {
            for phase in &scenario.phases {
                let row = report
                    .result(&variant.name, &phase.name)
                    .unwrap_or_else(|| {
                        panic!("{name}: no row for {} / {}", variant.name, phase.name)
                    });
                assert!(
                    row.load.sent_requests() > 0 && row.upstream.received > 0,
                    "{name}: {} / {} sent {} requests, upstream received {}",
                    variant.name,
                    phase.name,
                    row.load.sent_requests(),
                    row.upstream.received
                );
            }
        }
        let missed = report.missed();
        assert!(
            missed.is_empty(),
            "{name}: directions missed in the smoke run: {missed:#?}\n{}",
            report.table()
        );
        let path = report
            .write_json(out_dir.path())
            .unwrap_or_else(|e| panic!("{name}: writing JSON: {e}"));
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
        )
        .unwrap_or_else(|e| panic!("{name}: report JSON does not parse: {e}"));
        assert_eq!(json["name"], *name);
        assert!(report.table().contains(name));
    }
}

#[test]
fn the_drain_scenario_runs_end_to_end_in_a_smoke_run() {
    let mode = RunMode::Smoke {
        total: Duration::from_secs(2),
    };
    let drain = scenario::drain::drain();
    let report = scenario::drain::run(&drain, mode).unwrap_or_else(|e| panic!("drain: {e}"));
    assert!(report.smoke);
    for variant in &drain.variants {
        let row = report
            .result(variant.name)
            .unwrap_or_else(|| panic!("drain: no row for {}", variant.name));
        assert!(row.served > 0, "{row:?}");
        assert_eq!(
            row.clients_closed, row.clients,
            "every client is closed: {row:?}"
        );
    }
    let missed = report.missed();
    assert!(
        missed.is_empty(),
        "drain: directions missed in the smoke run: {missed:#?}\n{}",
        report.table()
    );
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    report
        .write_json(out_dir.path())
        .unwrap_or_else(|e| panic!("drain: writing JSON: {e}"));
    assert!(report.table().contains("drain-signal"));
}

#[test]
fn the_cache_failover_scenario_runs_end_to_end_in_a_smoke_run() {
    let mode = RunMode::Smoke {
        total: Duration::from_secs(2),
    };
    let failover = scenario::cache_failover::cache_failover();
    let report = scenario::cache_failover::run(&failover, mode)
        .unwrap_or_else(|e| panic!("cache-failover: {e}"));
    assert!(report.smoke);
    for variant in &failover.variants {
        for stretch in &failover.stretches {
            let row = report
                .result(variant.name, stretch.name)
                .unwrap_or_else(|| panic!("no row for {} / {}", variant.name, stretch.name));
            assert!(
                row.sent > 0,
                "{} / {} sent nothing",
                variant.name,
                stretch.name
            );
        }
    }
    let missed = report.missed();
    assert!(
        missed.is_empty(),
        "cache-failover: directions missed in the smoke run: {missed:#?}\n{}",
        report.table()
    );
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    report
        .write_json(out_dir.path())
        .unwrap_or_else(|e| panic!("cache-failover: writing JSON: {e}"));
    assert!(report.table().contains("entity-cache"));
}

#[test]
fn the_sandbox_scenario_runs_end_to_end_in_a_smoke_run() {
    let mode = RunMode::Smoke {
        total: Duration::from_secs(2),
    };
    let sandbox = scenario::sandbox::sandbox();
    let report = scenario::sandbox::run(&sandbox, mode).unwrap_or_else(|e| panic!("sandbox: {e}"));
    assert!(report.smoke);
    for variant in &sandbox.variants {
        for phase in &sandbox.phases {
            let row = report
                .result(variant.name, phase.name)
                .unwrap_or_else(|| panic!("sandbox: no row for {} / {}", variant.name, phase.name));
            assert!(row.sent > 0 && row.keyed > 0, "{row:?}");
        }
    }
    let missed = report.missed();
    assert!(
        missed.is_empty(),
        "sandbox: directions missed in the smoke run: {missed:#?}\n{}",
        report.table()
    );
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    report
        .write_json(out_dir.path())
        .unwrap_or_else(|e| panic!("sandbox: writing JSON: {e}"));
    assert!(report.table().contains("sandbox-router"));
}

//! `mesh-bootstrap xds`: the sidecar as file-based xDS (a bootstrap whose clusters come from
//! `cds.yaml` and listeners from `lds.yaml`), updated on a running Envoy in an order in which no
//! route ever names a cluster Envoy has not warmed: the seed's LDS/CDS race, where a route update
//! landing before its cluster was rejected.
//!
//! An update is make-before-break: (1) CDS with the new clusters added and the removed ones still
//! served; wait until Envoy counts the update accepted (`cluster_manager.cds.update_success`
//! advanced) and no cluster is warming (`cluster_manager.warming_clusters` 0); (2) LDS, waiting the
//! same way on `listener_manager.lds.*`; (3) CDS without the removed clusters, which no route names
//! any more. A rejected update (`update_rejected` advanced) or a deadline passed stops the update
//! with an error naming the file. Each file is written beside its final path and renamed onto it:
//! Envoy reloads on the rename and never reads half a file. When nothing answers on the admin
//! port, the files are written in the same order without waiting: a starting Envoy initializes
//! CDS before LDS.

use super::render::Rendered;
use crate::{Bootstrap, DiscoveryResponse};
use serde_json::Value;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The bootstrap Envoy runs (`envoy -c <dir>/bootstrap.yaml`).
pub const BOOTSTRAP_FILE: &str = "bootstrap.yaml";
/// The clusters (CDS).
pub const CDS_FILE: &str = "cds.yaml";
/// The listeners (LDS).
pub const LDS_FILE: &str = "lds.yaml";
/// How often Envoy's update stats are read while waiting (Envoy offers no event to await).
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What an xDS write did.
#[derive(Debug, Clone)]
pub struct Written {
    /// The bootstrap written to `bootstrap.yaml` (with absolute paths to the resource files).
    pub bootstrap: Bootstrap,
    /// Whether an Envoy answered on the admin port (and each update waited for it).
    pub envoy_running: bool,
    /// One line per file written or left alone, in order.
    pub steps: Vec<String>,
}

/// Why an xDS write stopped.
#[derive(Debug)]
pub enum XdsError {
    /// A file could not be read, written or renamed.
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file could not be written as, or read back from, YAML.
    Format {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The admin interface answered something unexpected.
    Admin(String),
    /// Envoy counted the update of `file` as rejected.
    Rejected {
        /// The resource file.
        path: PathBuf,
    },
    /// Envoy did not accept and warm the update of `file` in time.
    Timeout {
        /// The resource file.
        path: PathBuf,
        /// How long the write waited.
        waited: Duration,
        /// The stats last read.
        last: UpdateStats,
    },
}

impl fmt::Display for XdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Format { path, message } => write!(f, "{}: {message}", path.display()),
            Self::Admin(message) => write!(f, "Envoy's admin interface: {message}"),
            Self::Rejected { path } => write!(
                f,
                "Envoy rejected {} (its update_rejected counter advanced; its log says why); \
                 the files after it were not written",
                path.display()
            ),
            Self::Timeout { path, waited, last } => write!(
                f,
                "Envoy did not accept and warm {} within {waited:?} (update_success {}, \
                 warming {}); is the Envoy on this admin port running {}? The files after it were \
                 not written",
                path.display(),
                last.success,
                last.warming,
                path.with_file_name(BOOTSTRAP_FILE).display()
            ),
        }
    }
}

impl std::error::Error for XdsError {}

/// One resource type's update counters and warming gauge, as Envoy reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateStats {
    /// Updates accepted.
    pub success: u64,
    /// Updates rejected.
    pub rejected: u64,
    /// Resources still warming.
    pub warming: u64,
}

/// A resource type's stats names.
#[derive(Clone, Copy)]
struct Kind {
    success: &'static str,
    rejected: &'static str,
    warming: &'static str,
}

const CDS: Kind = Kind {
    success: "cluster_manager.cds.update_success",
    rejected: "cluster_manager.cds.update_rejected",
    warming: "cluster_manager.warming_clusters",
};

const LDS: Kind = Kind {
    success: "listener_manager.lds.update_success",
    rejected: "listener_manager.lds.update_rejected",
    warming: "listener_manager.total_listeners_warming",
};

/// Writes `rendered` as file-based xDS into `dir` (created if missing): `bootstrap.yaml`,
/// `cds.yaml`, `lds.yaml`, updating a running Envoy (found on the bootstrap's admin port) in
/// the order the module documentation gives, each wait bounded by `timeout`.
pub fn write(rendered: &Rendered, dir: &Path, timeout: Duration) -> Result<Written, XdsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    let (cds_path, lds_path) = (dir.join(CDS_FILE), dir.join(LDS_FILE));
    let (bootstrap, clusters, listeners) = rendered
        .bootstrap
        .clone()
        .into_file_xds(&cds_path, &lds_path);
    let admin = Admin::probe(bootstrap.admin_port())?;
    let mut steps = Vec::new();

    let bootstrap_path = dir.join(BOOTSTRAP_FILE);
    let bootstrap_text = bootstrap
        .to_yaml()
        .map_err(|err| format_error(&bootstrap_path, err))?;
    let bootstrap_changed = replace_file(&bootstrap_path, &bootstrap_text)?;
    steps.push(match (bootstrap_changed, admin.is_some()) {
        (false, _) => format!("{BOOTSTRAP_FILE}: unchanged"),
        (true, false) => format!("{BOOTSTRAP_FILE}: written"),
        (true, true) => format!(
            "{BOOTSTRAP_FILE}: written; its changes (admin, stats, overload, node) take effect \
             when Envoy restarts"
        ),
    });

    let final_clusters = resources_value(&cds_path, &DiscoveryResponse::new(clusters))?;
    let bridging = bridge(&served_resources(&cds_path)?, &final_clusters);
    let removed: Vec<&str> = names(&bridging)
        .filter(|name| !names(&final_clusters).any(|kept| kept == *name))
        .collect();
    let update = |path: &Path, kind: Kind, value: &Value, what: String| {
        let text = serde_yaml_ng::to_string(value).map_err(|err| format_error(path, err))?;
        apply(admin.as_ref(), path, kind, &text, timeout)
            .map(|outcome| outcome.describe(path, &what))
    };
    steps.push(update(
        &cds_path,
        CDS,
        &bridging,
        format!("{} cluster(s)", count(&bridging)),
    )?);
    let listeners_value = resources_value(&lds_path, &DiscoveryResponse::new(listeners))?;
    steps.push(update(
        &lds_path,
        LDS,
        &listeners_value,
        format!("{} listener(s)", count(&listeners_value)),
    )?);
    if !removed.is_empty() {
        steps.push(update(
            &cds_path,
            CDS,
            &final_clusters,
            format!(
                "{} cluster(s); removed, as no route names them now: {}",
                count(&final_clusters),
                removed.join(", ")
            ),
        )?);
    }
    Ok(Written {
        bootstrap,
        envoy_running: admin.is_some(),
        steps,
    })
}

/// The clusters to serve while the listeners change: those served now, in their order, each
/// replaced by its new version if it has one (a removed one kept, as a route may still name it),
/// then the added ones. Unchanged order keeps an update that only removes from rewriting CDS.
fn bridge(served: &[Value], new: &Value) -> Value {
    let new_resources = new["resources"].as_array().cloned().unwrap_or_default();
    let named = |name: &Value| {
        new_resources
            .iter()
            .find(|resource| resource["name"] == *name)
            .cloned()
    };
    let mut resources: Vec<Value> = served
        .iter()
        .map(|resource| named(&resource["name"]).unwrap_or_else(|| resource.clone()))
        .collect();
    for resource in &new_resources {
        if !served.iter().any(|old| old["name"] == resource["name"]) {
            resources.push(resource.clone());
        }
    }
    serde_json::json!({ "resources": resources })
}

/// What writing one resource file came to.
enum Outcome {
    Unchanged,
    Written,
    Accepted(Duration),
}

impl Outcome {
    fn describe(&self, path: &Path, what: &str) -> String {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        match self {
            Self::Unchanged => format!("{file}: unchanged ({what})"),
            Self::Written => format!("{file}: written ({what})"),
            Self::Accepted(after) => format!(
                "{file}: written ({what}); Envoy accepted it, nothing warming, after {} ms",
                after.as_millis()
            ),
        }
    }
}

/// Replaces `path` with `text` unless it holds it already; with an Envoy, waits until it has
/// accepted the update and warmed what it added.
fn apply(
    admin: Option<&Admin>,
    path: &Path,
    kind: Kind,
    text: &str,
    timeout: Duration,
) -> Result<Outcome, XdsError> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(Outcome::Unchanged);
    }
    let Some(admin) = admin else {
        replace_file(path, text)?;
        return Ok(Outcome::Written);
    };
    let before = admin.update_stats(kind)?;
    let started = Instant::now();
    let deadline = started + timeout;
    replace_file(path, text)?;
    loop {
        let now = admin.update_stats(kind)?;
        if now.rejected > before.rejected {
            return Err(XdsError::Rejected {
                path: path.to_owned(),
            });
        }
        if now.success > before.success && now.warming == 0 {
            return Ok(Outcome::Accepted(started.elapsed()));
        }
        if Instant::now() >= deadline {
            return Err(XdsError::Timeout {
                path: path.to_owned(),
                waited: timeout,
                last: now,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Writes `text` to a temporary file in `path`'s directory and renames it onto `path` (atomic:
/// a reader sees the old file or the new one). `false`: `path` held `text` already.
fn replace_file(path: &Path, text: &str) -> Result<bool, XdsError> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(false);
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temp, text).map_err(io(&temp))?;
    std::fs::rename(&temp, path).map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        XdsError::Io {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(true)
}

/// The resources `path` serves now (none if it does not exist yet).
fn served_resources(path: &Path) -> Result<Vec<Value>, XdsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(XdsError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|err| format_error(path, err))?;
    match value.get("resources") {
        Some(Value::Array(resources)) => Ok(resources.clone()),
        _ => Err(XdsError::Format {
            path: path.to_owned(),
            message: "has no `resources` list: not a file this command wrote".to_owned(),
        }),
    }
}

fn resources_value<T: crate::any::Message>(
    path: &Path,
    response: &DiscoveryResponse<T>,
) -> Result<Value, XdsError> {
    serde_json::to_value(response).map_err(|err| format_error(path, err))
}

fn names(response: &Value) -> impl Iterator<Item = &str> {
    response["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|resource| resource["name"].as_str())
}

fn count(response: &Value) -> usize {
    response["resources"].as_array().map_or(0, Vec::len)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> XdsError + '_ {
    move |source| XdsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn format_error(path: &Path, err: impl fmt::Display) -> XdsError {
    XdsError::Format {
        path: path.to_owned(),
        message: err.to_string(),
    }
}

/// Envoy's admin interface on loopback.
struct Admin {
    agent: ureq::Agent,
    base: String,
}

impl Admin {
    /// The admin interface on `127.0.0.1:port`, or `None` if nothing listens there.
    fn probe(port: u16) -> Result<Option<Self>, XdsError> {
        let admin = Self {
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build(),
            ),
            base: format!("http://{}", SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        };
        match admin.get("/ready") {
            Ok(_) => Ok(Some(admin)),
            Err(ureq::Error::ConnectionFailed) => Ok(None),
            Err(ureq::Error::Io(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                Ok(None)
            }
            // `/ready` answers 503 while Envoy initializes: it is running.
            Err(ureq::Error::StatusCode(_)) => Ok(Some(admin)),
            Err(err) => Err(XdsError::Admin(format!("{}/ready: {err}", admin.base))),
        }
    }

    fn get(&self, path: &str) -> Result<String, ureq::Error> {
        self.agent
            .get(format!("{}{path}", self.base))
            .call()?
            .body_mut()
            .read_to_string()
    }

    /// `kind`'s counters and gauge (`/stats?format=json`, the config managers' stats only).
    fn update_stats(&self, kind: Kind) -> Result<UpdateStats, XdsError> {
        let path = "/stats?format=json&filter=_manager";
        let body = self
            .get(path)
            .map_err(|err| XdsError::Admin(format!("{}{path}: {err}", self.base)))?;
        let stats: Value = serde_json::from_str(&body)
            .map_err(|err| XdsError::Admin(format!("{}{path}: not JSON: {err}", self.base)))?;
        let value = |name: &str| {
            stats["stats"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|stat| stat["name"] == name)
                .and_then(|stat| stat["value"].as_u64())
                .ok_or_else(|| {
                    XdsError::Admin(format!(
                        "no stat {name}: the Envoy on this admin port does not read its \
                         clusters and listeners from files (was it started on a `mesh-bootstrap \
                         xds` bootstrap?), or its stats inclusion list drops the stat"
                    ))
                })
        };
        Ok(UpdateStats {
            success: value(kind.success)?,
            rejected: value(kind.rejected)?,
            warming: value(kind.warming)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::compose::render::{render, RenderOptions};
    use crate::compose::spec::{ServiceSpec, SpecFormat};

    /// A spec whose admin port nothing listens on (bound, read, released), calling `deps`.
    fn rendered(admin: u16, deps: &[&str]) -> Rendered {
        let mut yaml = format!(
            "service: orders\napp: {{port: 8080, protocol: http1}}\nadmin: {{port: {admin}}}\ndependencies:\n"
        );
        for name in deps {
            yaml.push_str(&format!(
                "  - {{name: {name}, address: {name}.svc, port: 80, protocol: http1, timeout_ms: 100}}\n"
            ));
        }
        render(
            &ServiceSpec::parse(&yaml, SpecFormat::Yaml).unwrap(),
            &RenderOptions::default(),
        )
        .unwrap()
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn served_names(path: &Path) -> Vec<String> {
        served_resources(path)
            .unwrap()
            .iter()
            .map(|resource| resource["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn without_an_envoy_the_files_are_written_once_and_left_alone_when_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let admin = free_port();
        let written = write(
            &rendered(admin, &["alpha"]),
            dir.path(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!written.envoy_running);
        assert_eq!(
            written.steps,
            [
                "bootstrap.yaml: written",
                "cds.yaml: written (3 cluster(s))",
                "lds.yaml: written (3 listener(s))"
            ]
        );
        let bootstrap = std::fs::read_to_string(dir.path().join(BOOTSTRAP_FILE)).unwrap();
        let cds = dir.path().canonicalize().unwrap().join(CDS_FILE);
        assert!(bootstrap.contains(&format!("path: {}", cds.display())));
        assert!(!bootstrap.contains("egress_alpha"));
        assert_eq!(
            served_names(&cds),
            ["envoy_admin", "local_app", "egress_alpha"]
        );
        assert_eq!(
            served_names(&dir.path().join(LDS_FILE)),
            ["ingress", "egress", "prometheus"]
        );

        let again = write(
            &rendered(admin, &["alpha"]),
            dir.path(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(
            again.steps.iter().all(|step| step.contains("unchanged")),
            "{:?}",
            again.steps
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_removed_dependency_stays_served_until_the_listeners_no_longer_route_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let admin = free_port();
        write(
            &rendered(admin, &["alpha", "beta"]),
            dir.path(),
            Duration::from_secs(1),
        )
        .unwrap();
        let written = write(
            &rendered(admin, &["beta"]),
            dir.path(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            written.steps,
            [
                "bootstrap.yaml: unchanged",
                "cds.yaml: unchanged (4 cluster(s))",
                "lds.yaml: written (3 listener(s))",
                "cds.yaml: written (3 cluster(s); removed, as no route names them now: egress_alpha)"
            ]
        );
        assert_eq!(
            served_names(&dir.path().join(CDS_FILE)),
            ["envoy_admin", "local_app", "egress_beta"]
        );
    }

    #[test]
    fn a_resource_file_this_command_did_not_write_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CDS_FILE), "clusters: []\n").unwrap();
        let err = write(
            &rendered(free_port(), &[]),
            dir.path(),
            Duration::from_secs(1),
        )
        .expect_err("a foreign cds.yaml is refused");
        assert!(
            err.to_string()
                .contains("cds.yaml: has no `resources` list"),
            "{err}"
        );
    }
}

//! The bootstrap root: node identity, admin interface, the static listeners and clusters, and
//! file-based xDS sources for them.

use crate::cluster::Cluster;
use crate::listener::{Address, Listener};
use crate::server::{OverloadManager, StatsConfig};
use crate::xds::{ConfigSource, DynamicResources};
use serde::Serialize;
use std::path::Path;

/// `envoy.config.bootstrap.v3.Bootstrap`: static resources, or file-based xDS
/// ([`Bootstrap::into_file_xds`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bootstrap {
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<Node>,
    admin: Admin,
    static_resources: StaticResources,
    #[serde(skip_serializing_if = "Option::is_none")]
    dynamic_resources: Option<DynamicResources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats_config: Option<StatsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overload_manager: Option<OverloadManager>,
    /// Name of the cluster made by [`Bootstrap::admin_cluster`], kept so that
    /// [`Bootstrap::set_admin_port`] re-points it.
    #[serde(skip)]
    admin_cluster: Option<String>,
}

/// `envoy.config.core.v3.Node`: the proxy's identity (shows in logs and admin `/server_info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Unique id of this Envoy instance.
    pub id: String,
    /// The service the instance belongs to.
    pub cluster: String,
}

/// `envoy.config.bootstrap.v3.Admin`: where the admin interface listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Admin {
    /// Listen address (always loopback for the mesh: admin must not be reachable off-host).
    pub address: Address,
}

/// `Bootstrap.StaticResources`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct StaticResources {
    /// Listeners, in insertion order.
    pub listeners: Vec<Listener>,
    /// Clusters, in insertion order.
    pub clusters: Vec<Cluster>,
}

impl Bootstrap {
    /// A bootstrap with the admin interface on `127.0.0.1:<admin_port>` and nothing else.
    /// Port 0 asks the test harness to pick a free port.
    pub fn new(admin_port: u16) -> Self {
        Self {
            node: None,
            admin: Admin {
                address: Address::loopback(admin_port),
            },
            static_resources: StaticResources::default(),
            dynamic_resources: None,
            stats_config: None,
            overload_manager: None,
            admin_cluster: None,
        }
    }

    /// Sets the node identity.
    pub fn node(mut self, id: impl Into<String>, cluster: impl Into<String>) -> Self {
        self.node = Some(Node {
            id: id.into(),
            cluster: cluster.into(),
        });
        self
    }

    /// Sets which stats exist (see [`StatsConfig::inclusion_list`]).
    pub fn stats_config(mut self, stats: StatsConfig) -> Self {
        self.stats_config = Some(stats);
        self
    }

    /// Sets the overload manager.
    pub fn overload_manager(mut self, overload: OverloadManager) -> Self {
        self.overload_manager = Some(overload);
        self
    }

    /// Adds a listener.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.static_resources.listeners.push(listener);
        self
    }

    /// Adds a cluster (of any kind: [`Cluster::static_cluster`], [`Cluster::strict_dns`],
    /// [`Cluster::aggregate`]).
    pub fn cluster(mut self, cluster: impl Into<Cluster>) -> Self {
        self.static_resources.clusters.push(cluster.into());
        self
    }

    /// Adds the admin cluster `name` (see [`Cluster::admin`]) and keeps it pointed at the admin
    /// port when [`Self::set_admin_port`] changes it.
    pub fn admin_cluster(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.static_resources
            .clusters
            .push(Cluster::admin(name.clone(), self.admin_port()).into());
        self.admin_cluster = Some(name);
        self
    }

    /// The admin interface's port.
    pub fn admin_port(&self) -> u16 {
        self.admin.address.socket_address.port_value
    }

    /// Moves the admin interface (and the admin cluster, if any) to `port`.
    pub fn set_admin_port(&mut self, port: u16) {
        self.admin.address.socket_address.port_value = port;
        if let Some(name) = &self.admin_cluster {
            let repointed = Cluster::from(Cluster::admin(name.clone(), port));
            for cluster in &mut self.static_resources.clusters {
                if cluster.name() == name {
                    *cluster = repointed.clone();
                }
            }
        }
    }

    /// Splits the bootstrap for file-based xDS: the returned bootstrap keeps everything but its
    /// listeners and clusters, and reads the clusters from `cds_path` (CDS) and the listeners from
    /// `lds_path` (LDS); the clusters and listeners are what those files must serve. (At start
    /// Envoy initializes CDS before LDS, so routes find their clusters.)
    pub fn into_file_xds(
        mut self,
        cds_path: &Path,
        lds_path: &Path,
    ) -> (Self, Vec<Cluster>, Vec<Listener>) {
        let StaticResources {
            listeners,
            clusters,
        } = std::mem::take(&mut self.static_resources);
        self.admin_cluster = None;
        self.dynamic_resources = Some(DynamicResources {
            cds_config: ConfigSource::path(cds_path),
            lds_config: ConfigSource::path(lds_path),
        });
        (self, clusters, listeners)
    }

    /// The stats configuration, if set.
    pub fn stats_config_ref(&self) -> Option<&StatsConfig> {
        self.stats_config.as_ref()
    }

    /// The listeners.
    pub fn listeners(&self) -> &[Listener] {
        &self.static_resources.listeners
    }

    /// The listeners, mutably (e.g. for a harness assigning ports).
    pub fn listeners_mut(&mut self) -> &mut [Listener] {
        &mut self.static_resources.listeners
    }

    /// The clusters.
    pub fn clusters(&self) -> &[Cluster] {
        &self.static_resources.clusters
    }

    /// The bootstrap as YAML, ready for `envoy -c <file>.yaml`. Written from the JSON form
    /// (keys sorted), since YAML serializers spell enum variants as tags Envoy does not read.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        let value = serde_json::to_value(self)
            .map_err(<serde_yaml_ng::Error as serde::ser::Error>::custom)?;
        serde_yaml_ng::to_string(&value)
    }

    /// The bootstrap as pretty-printed JSON, ready for `envoy -c <file>.json`.
    pub fn to_json(&self) -> String {
        match serde_json::to_string_pretty(self) {
            Ok(json) => json,
            // Unreachable: every map in the model has string keys and no Serialize impl errors.
            Err(err) => unreachable!("bootstrap serialization cannot fail: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Route, WasmFilter};
    use serde_json::{json, Value};
    use std::net::SocketAddr;

    fn parse(bootstrap: &Bootstrap) -> Value {
        serde_json::from_str(&bootstrap.to_json()).unwrap()
    }

    #[test]
    fn new_bootstrap_has_loopback_admin_and_empty_resources() {
        assert_eq!(
            parse(&Bootstrap::new(9901)),
            json!({
                "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
                "static_resources": {"listeners": [], "clusters": []}
            })
        );
    }

    #[test]
    fn builder_assembles_listener_route_wasm_and_cluster() {
        let upstream: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let bootstrap = Bootstrap::new(9901)
            .node("sidecar-1", "payments")
            .listener(
                Listener::http("ingress", 10000)
                    .wasm_filter(WasmFilter::new("shed", "/shed.wasm"))
                    .route(Route::prefix("/").to_cluster("backend")),
            )
            .cluster(Cluster::static_cluster("backend", [upstream]));
        let value = parse(&bootstrap);
        assert_eq!(
            value["node"],
            json!({"id": "sidecar-1", "cluster": "payments"})
        );
        let hcm = &value["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        assert_eq!(
            hcm["http_filters"][0]["typed_config"]["config"]["name"],
            "shed"
        );
        assert_eq!(
            hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"],
            "backend"
        );
        assert_eq!(value["static_resources"]["clusters"][0]["name"], "backend");
    }

    #[test]
    fn file_xds_moves_listeners_and_clusters_out_to_path_sources() {
        let bootstrap = Bootstrap::new(9901).admin_cluster("admin").listener(
            Listener::http("ingress", 10000).route(Route::prefix("/").to_cluster("admin")),
        );
        let (xds, clusters, listeners) =
            bootstrap.into_file_xds(Path::new("/x/cds.yaml"), Path::new("/x/lds.yaml"));
        let value = parse(&xds);
        assert_eq!(
            value["static_resources"],
            json!({"listeners": [], "clusters": []})
        );
        assert_eq!(
            value["dynamic_resources"]["cds_config"]["path_config_source"]["path"],
            "/x/cds.yaml"
        );
        assert_eq!(
            value["dynamic_resources"]["lds_config"]["path_config_source"]["path"],
            "/x/lds.yaml"
        );
        assert_eq!(clusters[0].name(), "admin");
        assert_eq!(listeners[0].name(), "ingress");
    }

    #[test]
    fn set_admin_port_repoints_the_admin_cluster() {
        let mut bootstrap = Bootstrap::new(0).admin_cluster("admin");
        bootstrap.set_admin_port(19000);
        let value = parse(&bootstrap);
        assert_eq!(
            value["admin"]["address"]["socket_address"]["port_value"],
            19000
        );
        let cluster = &value["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], "admin");
        assert_eq!(
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"],
            19000
        );
        assert_eq!(bootstrap.admin_port(), 19000);
    }
}

//! Listeners and clusters as xDS resources: the `DiscoveryResponse` documents a file-based xDS
//! source serves (`cds.yaml`, `lds.yaml`), and the `ConfigSource` a bootstrap points at them with.

use crate::any::{Any, Message};
use serde::Serialize;
use std::path::Path;

/// `envoy.service.discovery.v3.DiscoveryResponse` as a file: the complete set of one resource
/// type (a file-based subscription replaces everything it served before with this).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(bound = "T: Message")]
pub struct DiscoveryResponse<T> {
    resources: Vec<Any<T>>,
}

impl<T: Message> DiscoveryResponse<T> {
    /// The response carrying `resources`, each packed with its type URL.
    pub fn new(resources: impl IntoIterator<Item = T>) -> Self {
        Self {
            resources: resources.into_iter().map(Any).collect(),
        }
    }

    /// The resources.
    pub fn resources(&self) -> impl Iterator<Item = &T> {
        self.resources.iter().map(|any| &any.0)
    }

    /// The document as YAML (from the JSON form, keys sorted, as [`crate::Bootstrap::to_yaml`]).
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        let value = serde_json::to_value(self)
            .map_err(<serde_yaml_ng::Error as serde::ser::Error>::custom)?;
        serde_yaml_ng::to_string(&value)
    }
}

/// `envoy.config.core.v3.ConfigSource` reading a file: Envoy loads it at start and again
/// whenever a file is moved onto that path (write elsewhere in the directory, then rename).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigSource {
    path_config_source: PathConfigSource,
    resource_api_version: &'static str,
}

/// `envoy.config.core.v3.PathConfigSource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct PathConfigSource {
    path: String,
}

impl ConfigSource {
    /// The v3 resources in the file at `path`.
    pub fn path(path: &Path) -> Self {
        Self {
            path_config_source: PathConfigSource {
                path: path.to_string_lossy().into_owned(),
            },
            resource_api_version: "V3",
        }
    }
}

/// `Bootstrap.DynamicResources`: where the clusters (CDS) and listeners (LDS) come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DynamicResources {
    /// The clusters' source.
    pub cds_config: ConfigSource,
    /// The listeners' source.
    pub lds_config: ConfigSource,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Cluster, Listener, Route};
    use serde_json::json;

    #[test]
    fn a_discovery_response_packs_each_resource_with_its_type() {
        let clusters = DiscoveryResponse::new([
            Cluster::from(Cluster::static_cluster(
                "a",
                ["127.0.0.1:1".parse().unwrap()],
            )),
            Cluster::aggregate("b", ["a"]).into(),
        ]);
        let value = serde_json::to_value(&clusters).unwrap();
        assert_eq!(
            value["resources"][0]["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(value["resources"][0]["name"], "a");
        assert_eq!(value["resources"][1]["name"], "b");
        let listeners = DiscoveryResponse::new([
            Listener::http("l", 1).route(Route::prefix("/").to_cluster("a"))
        ]);
        let value = serde_json::to_value(&listeners).unwrap();
        assert_eq!(
            value["resources"][0]["@type"],
            "type.googleapis.com/envoy.config.listener.v3.Listener"
        );
        assert_eq!(value["resources"][0]["name"], "l");
        assert_eq!(listeners.resources().count(), 1);
    }

    #[test]
    fn a_path_config_source_names_the_file_and_v3() {
        assert_eq!(
            serde_json::to_value(ConfigSource::path(Path::new("/xds/cds.yaml"))).unwrap(),
            json!({"path_config_source": {"path": "/xds/cds.yaml"}, "resource_api_version": "V3"})
        );
    }
}

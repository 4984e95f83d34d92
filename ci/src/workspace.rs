//! What the workspace contains: its root and its crates, as cargo sees them.

use anyhow::{Context, Result};
use cargo_metadata::{Metadata, MetadataCommand};
use std::path::Path;

/// The workspace as cargo sees it.
pub struct Workspace {
    metadata: Metadata,
}

impl Workspace {
    /// Reads the workspace around the current directory.
    pub fn locate() -> Result<Self> {
        let metadata = MetadataCommand::new()
            .no_deps()
            .exec()
            .context("cargo metadata failed")?;
        Ok(Self { metadata })
    }

    /// The workspace root directory.
    pub fn root(&self) -> &Path {
        self.metadata.workspace_root.as_std_path()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::Workspace;
    use std::path::PathBuf;

    /// Every workspace crate with a `cdylib` target (a proxy-wasm module), with its directory.
    fn cdylib_crates(ws: &Workspace) -> Vec<(String, PathBuf)> {
        ws.metadata
            .workspace_packages()
            .into_iter()
            .filter(|p| {
                p.targets
                    .iter()
                    .any(|t| t.crate_types.iter().any(|k| k.to_string() == "cdylib"))
            })
            .filter_map(|p| {
                let dir = p.manifest_path.parent()?.as_std_path().to_path_buf();
                Some((p.name.to_string(), dir))
            })
            .collect()
    }

    #[test]
    fn every_module_crate_of_the_workspace_is_in_the_catalog() {
        let ws = Workspace::locate().unwrap();
        let crates = cdylib_crates(&ws);
        assert!(!crates.is_empty());
        for (name, dir) in &crates {
            let module = mesh_catalog::module(name).unwrap_or_else(|e| {
                panic!("{e}: add crate `{name}` to MODULES in filters/catalog/src/lib.rs")
            });
            assert_eq!(&ws.root().join(module.crate_dir), dir, "{name}");
        }
        for module in mesh_catalog::MODULES {
            assert!(
                crates.iter().any(|(name, _)| name == module.crate_name),
                "catalog lists `{}`, which is no cdylib crate of the workspace",
                module.crate_name
            );
        }
    }
}

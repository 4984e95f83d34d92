//! What the workspace contains: its root, target directory and the crates that build wasm modules.

use anyhow::{Context, Result};
use cargo_metadata::{Metadata, MetadataCommand, Package};
use std::path::{Path, PathBuf};

/// The wasm target every module is built for.
pub const WASM_TARGET: &str = "wasm32-wasip1";

/// The workspace as cargo sees it.
pub struct Workspace {
    metadata: Metadata,
}

/// A crate that builds a proxy-wasm module.
pub struct WasmModule {
    /// Cargo package name, e.g. `load-shedder`.
    pub package: String,
    /// Where the release build puts the module.
    pub path: PathBuf,
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

    /// The cargo target directory.
    pub fn target_dir(&self) -> &Path {
        self.metadata.target_directory.as_std_path()
    }

    /// Every workspace crate with a `cdylib` target: the filters and the test fixtures.
    pub fn wasm_modules(&self) -> Vec<WasmModule> {
        self.metadata
            .workspace_packages()
            .into_iter()
            .filter(|p| is_cdylib(p))
            .map(|p| WasmModule {
                package: p.name.to_string(),
                path: self
                    .target_dir()
                    .join(WASM_TARGET)
                    .join("release")
                    .join(format!("{}.wasm", p.name.replace('-', "_"))),
            })
            .collect()
    }
}

fn is_cdylib(package: &Package) -> bool {
    package
        .targets
        .iter()
        .any(|t| t.crate_types.iter().any(|k| k.to_string() == "cdylib"))
}

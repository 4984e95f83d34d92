//! Where a module's release build is, and whether it is fresh: the workspace root, the cargo target
//! directory, and the comparison of a module's modification time with its sources'.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{Module, MESHKIT_DIR, MODULES};

/// The target every module is built for.
pub const WASM_TARGET: &str = "wasm32-wasip1";

/// Why a module cannot be used.
#[derive(Debug)]
pub enum ModuleError {
    /// No module of the table is built by this crate.
    Unknown {
        /// The crate name asked for.
        crate_name: String,
    },
    /// The module file does not exist.
    NotBuilt {
        /// The module's crate.
        crate_name: &'static str,
        /// Where it was expected.
        path: PathBuf,
    },
    /// A source the module is built from changed after the module was built.
    Stale {
        /// The module's crate.
        crate_name: &'static str,
        /// The module file.
        path: PathBuf,
        /// A source newer than the module.
        newer_source: PathBuf,
    },
    /// The module's or a source's modification time could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { crate_name } => {
                let known: Vec<_> = MODULES.iter().map(|m| m.crate_name).collect();
                write!(
                    f,
                    "no module is built by crate `{crate_name}` (known: {})",
                    known.join(", ")
                )
            }
            Self::NotBuilt { crate_name, path } => write!(
                f,
                "module of `{crate_name}` is not built ({} does not exist): run `cargo xtask build` first",
                path.display()
            ),
            Self::Stale {
                crate_name,
                path,
                newer_source,
            } => write!(
                f,
                "module of `{crate_name}` ({}) is older than its source {}: run `cargo xtask build` first",
                path.display(),
                newer_source.display()
            ),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for ModuleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The workspace root (this crate is `filters/catalog` in it).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (a relative one resolved against the workspace root,
/// where `cargo xtask` and CI run cargo), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    resolve_target_dir(&workspace_root(), std::env::var_os("CARGO_TARGET_DIR"))
}

/// The target directory for `CARGO_TARGET_DIR` = `env` in workspace `root`.
pub fn resolve_target_dir(root: &Path, env: Option<OsString>) -> PathBuf {
    match env.filter(|dir| !dir.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

impl Module {
    /// Where the release build puts the module under `target_dir`.
    pub fn path_in(&self, target_dir: &Path) -> PathBuf {
        target_dir
            .join(WASM_TARGET)
            .join("release")
            .join(self.file_name)
    }

    /// Where the release build puts the module: `<target>/wasm32-wasip1/release/<file_name>`.
    pub fn path(&self) -> PathBuf {
        self.path_in(&target_dir())
    }

    /// The module's path, once it exists and is not older than any source it is built from (see
    /// [`Module::check_fresh`]); otherwise an error naming the module and telling to run
    /// `cargo xtask build`.
    pub fn built(&self) -> Result<PathBuf, ModuleError> {
        let path = self.path();
        self.check_fresh(&path, &workspace_root())?;
        Ok(path)
    }

    /// Fails unless the module at `path` exists and is at least as new as every source it was built
    /// from under workspace `root`: the workspace files listed in the build's dep-info file (`<module>.d`
    /// beside it, written by cargo: the crate's and meshkit's sources, and any other workspace crate it
    /// uses); without a dep-info file, every file under the crate's and meshkit's `src/`.
    ///
    /// `Cargo.toml` is not compared: cargo rebuilds the module when a manifest change affects it and
    /// leaves it untouched otherwise (a new dev-dependency), so a newer manifest proves nothing and
    /// `cargo xtask build` could never clear the refusal.
    pub fn check_fresh(&self, path: &Path, root: &Path) -> Result<(), ModuleError> {
        let built = match std::fs::metadata(path).and_then(|m| m.modified()) {
            Ok(time) => time,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModuleError::NotBuilt {
                    crate_name: self.crate_name,
                    path: path.to_owned(),
                })
            }
            Err(source) => {
                return Err(ModuleError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let sources = match std::fs::read_to_string(path.with_extension("d")) {
            Ok(dep_info) => dep_info_sources(&dep_info)
                .into_iter()
                .filter(|source| source.starts_with(root))
                .collect(),
            Err(_) => {
                let mut files = Vec::new();
                for dir in [self.crate_dir, MESHKIT_DIR] {
                    files_under(&root.join(dir).join("src"), &mut files)?;
                }
                files
            }
        };
        match stale_source(built, &sources)? {
            Some(newer_source) => Err(ModuleError::Stale {
                crate_name: self.crate_name,
                path: path.to_owned(),
                newer_source,
            }),
            None => Ok(()),
        }
    }
}

/// The first of `sources` modified after `built`. A source that no longer exists is skipped (a deleted
/// file changes the module only through an edit of a file that remains).
pub fn stale_source(
    built: SystemTime,
    sources: &[PathBuf],
) -> Result<Option<PathBuf>, ModuleError> {
    for source in sources {
        match std::fs::metadata(source).and_then(|m| m.modified()) {
            Ok(modified) if modified > built => return Ok(Some(source.clone())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source_err) => {
                return Err(ModuleError::Io {
                    path: source.clone(),
                    source: source_err,
                })
            }
        }
    }
    Ok(None)
}

/// The prerequisites of the first rule of a Makefile-style dep-info file (`out: a.rs b\ c.rs`).
fn dep_info_sources(dep_info: &str) -> Vec<PathBuf> {
    let Some(first_rule) = dep_info.lines().next() else {
        return Vec::new();
    };
    // The target is the module path; prerequisites follow the first unescaped ": ".
    let Some((_, prerequisites)) = first_rule.split_once(": ") else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = prerequisites.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(escaped) = chars.next() {
                    current.push(escaped);
                }
            }
            ' ' => {
                if !current.is_empty() {
                    sources.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        sources.push(PathBuf::from(current));
    }
    sources
}

/// Appends every file under `dir` (recursively) to `files`; a missing `dir` adds nothing.
fn files_under(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ModuleError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ModuleError::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    for entry in entries {
        let path = entry
            .map_err(|source| ModuleError::Io {
                path: dir.to_owned(),
                source,
            })?
            .path();
        if path.is_dir() {
            files_under(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::Kind;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "mesh-catalog-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const FILTER: Module = Module {
        crate_name: "demo-filter",
        crate_dir: "filters/demo-filter",
        file_name: "demo_filter.wasm",
        kind: Kind::Filter,
        scenario: None,
        bench_config: None,
    };

    /// An hour ago, so "now" (a file written by the test) is clearly newer.
    fn an_hour_ago() -> SystemTime {
        SystemTime::now() - Duration::from_secs(3600)
    }

    /// Writes `path` (creating its directory) and sets its modification time.
    fn write_at(path: &Path, time: SystemTime) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }

    /// A workspace with the filter's and meshkit's sources an hour old, and the module built after them.
    fn workspace() -> (TempDir, PathBuf) {
        let root = TempDir::new();
        write_at(
            &root.0.join("filters/demo-filter/src/lib.rs"),
            an_hour_ago(),
        );
        write_at(
            &root.0.join("filters/demo-filter/src/policy/core.rs"),
            an_hour_ago(),
        );
        write_at(&root.0.join("filters/common/src/lib.rs"), an_hour_ago());
        let module = FILTER.path_in(&root.0.join("target"));
        write_at(&module, an_hour_ago() + Duration::from_secs(60));
        (root, module)
    }

    fn stale_name(result: Result<(), ModuleError>) -> String {
        match result {
            Err(ModuleError::Stale { newer_source, .. }) => newer_source
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            other => panic!("expected Stale, got {other:?}"),
        }
    }

    #[test]
    fn a_module_newer_than_its_sources_is_fresh() {
        let (root, module) = workspace();
        FILTER.check_fresh(&module, &root.0).unwrap();
    }

    #[test]
    fn a_missing_module_says_to_build() {
        let root = TempDir::new();
        let err = FILTER
            .check_fresh(&FILTER.path_in(&root.0.join("target")), &root.0)
            .unwrap_err();
        assert!(matches!(err, ModuleError::NotBuilt { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("demo-filter"), "{message}");
        assert!(message.contains("run `cargo xtask build`"), "{message}");
    }

    #[test]
    fn an_edited_source_of_the_crate_makes_the_module_stale() {
        let (root, module) = workspace();
        write_at(
            &root.0.join("filters/demo-filter/src/policy/core.rs"),
            SystemTime::now(),
        );
        let err = FILTER.check_fresh(&module, &root.0);
        assert_eq!(stale_name(err), "core.rs");
        let err = FILTER.check_fresh(&module, &root.0).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("demo-filter") && message.contains("run `cargo xtask build`"),
            "{message}"
        );
    }

    #[test]
    fn an_edited_meshkit_source_makes_the_module_stale() {
        let (root, module) = workspace();
        write_at(
            &root.0.join("filters/common/src/shared.rs"),
            SystemTime::now(),
        );
        assert_eq!(
            stale_name(FILTER.check_fresh(&module, &root.0)),
            "shared.rs"
        );
    }

    #[test]
    fn the_manifest_and_files_outside_src_do_not_count() {
        let (root, module) = workspace();
        write_at(
            &root.0.join("filters/demo-filter/Cargo.toml"),
            SystemTime::now(),
        );
        write_at(
            &root.0.join("filters/demo-filter/tests/policy.rs"),
            SystemTime::now(),
        );
        write_at(&root.0.join("filters/other/src/lib.rs"), SystemTime::now());
        FILTER.check_fresh(&module, &root.0).unwrap();
    }

    #[test]
    fn the_dep_info_lists_the_sources_when_cargo_wrote_one() {
        let (root, module) = workspace();
        let suite_dep = root.0.join("filters/other dir/src/lib.rs");
        write_at(&suite_dep, an_hour_ago());
        let outside = TempDir::new();
        let registry_source = outside.0.join("registry/serde/src/lib.rs");
        write_at(&registry_source, SystemTime::now());
        let listed = |p: &Path| p.display().to_string().replace(' ', "\\ ");
        std::fs::write(
            module.with_extension("d"),
            format!(
                "{}: {} {} {}\n\n{}:\n",
                listed(&module),
                listed(&root.0.join("filters/demo-filter/src/lib.rs")),
                listed(&suite_dep),
                listed(&registry_source),
                listed(&suite_dep),
            ),
        )
        .unwrap();
        // A file outside the workspace (a registry crate) does not count.
        FILTER.check_fresh(&module, &root.0).unwrap();
        // A listed workspace file of another crate (a path with a space) does.
        write_at(&suite_dep, SystemTime::now());
        assert_eq!(stale_name(FILTER.check_fresh(&module, &root.0)), "lib.rs");
        // A file under src/ the build did not use does not.
        write_at(&suite_dep, an_hour_ago());
        write_at(
            &root.0.join("filters/demo-filter/src/unused.rs"),
            SystemTime::now(),
        );
        FILTER.check_fresh(&module, &root.0).unwrap();
    }

    #[test]
    fn a_relative_cargo_target_dir_resolves_against_the_workspace_root() {
        let root = Path::new("/ws");
        assert_eq!(
            resolve_target_dir(root, Some("out/t".into())),
            Path::new("/ws/out/t")
        );
        assert_eq!(
            resolve_target_dir(root, Some("/abs/t".into())),
            Path::new("/abs/t")
        );
        assert_eq!(resolve_target_dir(root, None), Path::new("/ws/target"));
        assert_eq!(
            FILTER.path_in(&resolve_target_dir(root, Some("t".into()))),
            Path::new("/ws/t/wasm32-wasip1/release/demo_filter.wasm")
        );
    }
}

//! `mesh-bootstrap`: a service spec in, a sidecar bootstrap out (rendered, validated by the real
//! Envoy, or explained).

use clap::{Parser, Subcommand, ValueEnum};
use envoy_configs::compose::dashboard;
use envoy_configs::compose::explain::explain;
use envoy_configs::compose::k8s;
use envoy_configs::compose::render::{
    render, render_local, Modules, RenderOptions, Rendered, DEFAULT_WASM_DIR,
};
use envoy_configs::compose::spec::{ServiceSpec, SpecFormat};
use envoy_configs::compose::xds;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Turns a service spec (YAML or JSON) into an Envoy 1.40 sidecar bootstrap with the mesh filters
/// wired in. Nobody hand-writes Envoy config: write the spec, render it, validate it.
///
/// A spec names the service, its app port and protocol, the mesh filters it runs (each with
/// the filter's own configuration) and the dependencies it calls:
///
///   service: payment-service
///   app: {port: 8080, protocol: grpc}
///   filters:
///     load_shedder: {bypass_paths: [/healthz]}
///   dependencies:
///     - {name: ledger, address: ledger.payments.svc, port: 8080, protocol: grpc, timeout_ms: 800}
///
/// Unknown fields are errors; every error names the field path (and, in YAML, the line).
/// See envoy-configs/examples/ and the README section "The composer".
#[derive(Parser)]
#[command(name = "mesh-bootstrap", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render the sidecar bootstrap of SPEC (to stdout, or --out).
    ///
    /// Run the result with `envoy -c FILE --drain-strategy immediate`: the filters' drain
    /// signal relies on immediate draining.
    Render {
        /// The service spec (.yaml/.yml or .json).
        spec: PathBuf,
        /// Where the sidecar finds the .wasm modules (Dockerfile.envoy puts them in /etc/envoy/wasm).
        #[arg(long, default_value = DEFAULT_WASM_DIR)]
        wasm_dir: PathBuf,
        /// Write the bootstrap here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Output format (Envoy reads both; it picks by the file extension).
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
        #[command(flatten)]
        packaging: Packaging,
    },
    /// Render SPEC against this checkout's built modules and run the real Envoy's
    /// `--mode validate` on it: Envoy builds every listener, cluster and filter, loading each
    /// wasm module with its configuration, without serving traffic.
    ///
    /// Needs the modules (`cargo xtask build`) and the pinned Envoy (`cargo xtask bootstrap`;
    /// or set MESH_ENVOY_BIN).
    Validate {
        /// The service spec (.yaml/.yml or .json).
        spec: PathBuf,
        #[command(flatten)]
        packaging: Packaging,
    },
    /// Write SPEC's sidecar as file-based xDS into DIR, for an Envoy that picks up changes
    /// without restarting: `bootstrap.yaml` (run `envoy -c DIR/bootstrap.yaml --drain-strategy
    /// immediate`), `cds.yaml` (clusters) and `lds.yaml` (listeners).
    ///
    /// Re-run it after changing the spec: if an Envoy answers on the spec's admin port, the update
    /// is ordered so no route ever names a cluster Envoy has not warmed (a route update landing
    /// first is rejected): CDS with the new clusters added (removed ones kept), wait until Envoy
    /// accepted it and warmed them; then LDS, wait until accepted; then CDS without the removed
    /// clusters. Each file is renamed into place, so Envoy never reads half a file. A rejected
    /// update or a passed --timeout-s stops with an error naming the file. Changes to the
    /// bootstrap itself (admin, stats, overload) need an Envoy restart.
    Xds {
        /// The service spec (.yaml/.yml or .json).
        spec: PathBuf,
        /// The directory Envoy reads (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Where the sidecar finds the .wasm modules.
        #[arg(long, default_value = DEFAULT_WASM_DIR)]
        wasm_dir: PathBuf,
        /// How long Envoy gets to accept and warm each update.
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
        #[command(flatten)]
        packaging: Packaging,
    },
    /// Write the Grafana dashboard and Prometheus alert rules of SPEC's sidecar into DIR:
    /// `dashboard.json`, `alerts.yaml` (high error rate, increased latency, one per mesh filter)
    /// and `alerts.test.yaml` (`promtool test rules alerts.test.yaml`: a case per alert).
    ///
    /// The queries select `service="<name>"`: attach that label to the sidecar's
    /// `/stats/prometheus` scrape target.
    Dashboard {
        /// The service spec (.yaml/.yml or .json).
        spec: PathBuf,
        /// Output directory (created if missing).
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[command(flatten)]
        packaging: Packaging,
    },
    /// Write Kubernetes manifests of SPEC into DIR: `kubernetes.yaml` (the bootstrap as a
    /// ConfigMap; a Deployment with the app and the sidecar, which fails fast without its
    /// bootstrap, drains on preStop and is ready once Envoy is) and `istio.yaml` (a WasmPlugin per
    /// plugin, for teams already on Istio).
    K8s {
        /// The service spec (.yaml/.yml or .json).
        spec: PathBuf,
        /// Output directory (created if missing).
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// The app container's image (default `<service>:latest`).
        #[arg(long)]
        app_image: Option<String>,
        /// The sidecar image, built from Dockerfile.envoy.
        #[arg(long, default_value = "mesh-envoy:latest")]
        sidecar_image: String,
        #[command(flatten)]
        packaging: Packaging,
    },
    /// Say in plain language what the sidecar of SPEC does to traffic, per listener and filter.
    Explain {
        /// The service spec (.yaml/.yml or .json).
        spec: PathBuf,
        #[command(flatten)]
        packaging: Packaging,
    },
}

#[derive(clap::Args)]
struct Packaging {
    /// `suite`: one mesh_suite.wasm plugin per listener runs its filters in order (one VM, one
    /// filter hop per request); `separate`: one module per filter.
    #[arg(long, value_enum, default_value_t = ModulesArg::Suite)]
    modules: ModulesArg,
}

impl Packaging {
    fn modules(&self) -> Modules {
        match self.modules {
            ModulesArg::Suite => Modules::Suite,
            ModulesArg::Separate => Modules::Separate,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ModulesArg {
    Suite,
    Separate,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mesh-bootstrap: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Render {
            spec,
            wasm_dir,
            out,
            format,
            packaging,
        } => {
            let (_, rendered) = load_and_render(&spec, wasm_dir, &packaging)?;
            print_notes(&rendered);
            let text = match format {
                Format::Json => rendered.bootstrap.to_json() + "\n",
                Format::Yaml => rendered
                    .bootstrap
                    .to_yaml()
                    .map_err(|err| format!("writing YAML: {err}"))?,
            };
            match out {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|err| format!("writing {}: {err}", path.display())),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
        Command::Validate { spec, packaging } => {
            let rendered = render_local(&load_spec(&spec)?, packaging.modules())
                .map_err(|err| format!("{}: {err}", spec.display()))?;
            print_notes(&rendered);
            let envoy = envoy_configs::envoy::envoy_binary().map_err(|path| {
                format!(
                    "no Envoy at {}: run `cargo xtask bootstrap` or set MESH_ENVOY_BIN",
                    path.display()
                )
            })?;
            let dir = std::env::temp_dir().join(format!("mesh-bootstrap-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|err| format!("creating {}: {err}", dir.display()))?;
            let file = dir.join("bootstrap.json");
            std::fs::write(&file, rendered.bootstrap.to_json())
                .map_err(|err| format!("writing {}: {err}", file.display()))?;
            let verdict = envoy_configs::envoy::validate_file(&envoy, &file)
                .map_err(|err| format!("running {}: {err}", envoy.display()))?;
            match verdict {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    println!(
                        "{}: Envoy accepts the sidecar ({} plugin(s), {} cluster(s))",
                        spec.display(),
                        rendered.plugins.len(),
                        rendered.bootstrap.clusters().len()
                    );
                    Ok(())
                }
                Err(rejected) => Err(format!(
                    "Envoy rejects the rendered sidecar ({}); kept at {}:\n{}",
                    rejected.status,
                    file.display(),
                    rejected.output
                )),
            }
        }
        Command::Xds {
            spec,
            dir,
            wasm_dir,
            timeout_s,
            packaging,
        } => {
            let (_, rendered) = load_and_render(&spec, wasm_dir, &packaging)?;
            print_notes(&rendered);
            let written = xds::write(&rendered, &dir, std::time::Duration::from_secs(timeout_s))
                .map_err(|err| err.to_string())?;
            if !written.envoy_running {
                println!(
                    "no Envoy answers on admin port {}: files written in order (a starting Envoy \
                     loads CDS before LDS)",
                    rendered.bootstrap.admin_port()
                );
            }
            for step in &written.steps {
                println!("{step}");
            }
            Ok(())
        }
        Command::Dashboard {
            spec,
            out_dir,
            packaging,
        } => {
            let (parsed, rendered) =
                load_and_render(&spec, PathBuf::from(DEFAULT_WASM_DIR), &packaging)?;
            let alerts = dashboard::alerts(&parsed, &rendered);
            let rules = dashboard::rule_file(&parsed.service, &alerts)
                .map_err(|err| format!("writing the rules: {err}"))?;
            let tests = dashboard::rule_tests(&parsed.service, "alerts.yaml", &alerts)
                .map_err(|err| format!("writing the rule tests: {err}"))?;
            let board = dashboard::dashboard(&parsed, &rendered);
            write_files(
                &out_dir,
                [
                    ("dashboard.json", format!("{board:#}\n")),
                    ("alerts.yaml", rules),
                    ("alerts.test.yaml", tests),
                ],
            )
        }
        Command::K8s {
            spec,
            out_dir,
            app_image,
            sidecar_image,
            packaging,
        } => {
            let (parsed, rendered) =
                load_and_render(&spec, PathBuf::from(DEFAULT_WASM_DIR), &packaging)?;
            let images = k8s::Images {
                app: app_image.unwrap_or_else(|| format!("{}:latest", parsed.service)),
                sidecar: sidecar_image,
            };
            let kubernetes = k8s::kubernetes(&parsed, &rendered, &images)
                .map_err(|err| format!("writing the manifests: {err}"))?;
            let istio = k8s::istio(&parsed, &rendered)
                .map_err(|err| format!("writing WasmPlugins: {err}"))?;
            write_files(
                &out_dir,
                [("kubernetes.yaml", kubernetes), ("istio.yaml", istio)],
            )
        }
        Command::Explain { spec, packaging } => {
            let (parsed, rendered) =
                load_and_render(&spec, PathBuf::from(DEFAULT_WASM_DIR), &packaging)?;
            print!("{}", explain(&parsed, &rendered));
            Ok(())
        }
    }
}

fn load_spec(path: &Path) -> Result<ServiceSpec, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("reading {}: {err}", path.display()))?;
    ServiceSpec::parse(&text, SpecFormat::of_path(path))
        .map_err(|err| format!("{}: {err}", path.display()))
}

fn load_and_render(
    path: &Path,
    wasm_dir: PathBuf,
    packaging: &Packaging,
) -> Result<(ServiceSpec, Rendered), String> {
    let spec = load_spec(path)?;
    let options = RenderOptions {
        wasm_dir,
        modules: packaging.modules(),
    };
    let rendered = render(&spec, &options).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok((spec, rendered))
}

fn write_files<const N: usize>(dir: &Path, files: [(&str, String); N]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|err| format!("creating {}: {err}", dir.display()))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|err| format!("writing {}: {err}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_notes(rendered: &Rendered) {
    for note in &rendered.notes {
        eprintln!("mesh-bootstrap: note: {note}");
    }
}

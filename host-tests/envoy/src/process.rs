//! [`EnvoyProcess`]: one Envoy child process per test, with its own ports, base id and log.

use crate::log_scan::{log_tail, wasm_failures};
use crate::paths::envoy_binary;
use crate::ports::reserve_port;
use crate::EnvoyError;
use envoy_configs::Bootstrap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How often readiness and stats are polled while waiting (Envoy offers no event to await).
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long Envoy gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(10);
/// Log lines shown in startup errors.
const TAIL_LINES: usize = 40;

/// Envoy's `--drain-strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStrategy {
    /// Encourage connections to close progressively over the drain time.
    Gradual,
    /// Close connections as soon as draining starts.
    Immediate,
}

impl DrainStrategy {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Gradual => "gradual",
            Self::Immediate => "immediate",
        }
    }
}

/// Command-line options of an [`EnvoyProcess`].
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Worker threads (`--concurrency`), each with its own wasm VMs. Default 2.
    pub concurrency: u32,
    /// `--drain-strategy`; `None` keeps Envoy's default (gradual).
    pub drain_strategy: Option<DrainStrategy>,
    /// `--drain-time-s` (whole seconds); `None` keeps Envoy's default (600 s).
    pub drain_time: Option<Duration>,
    /// `-l`: the log level. Default `info` (wasm `info` logs and every failure show).
    pub log_level: String,
    /// `--component-log-level`, e.g. `wasm:debug`.
    pub component_log_level: Option<String>,
    /// How long to wait for `/ready` to say `LIVE`. Default 30 s.
    pub ready_timeout: Duration,
    /// CPUs every Envoy thread is pinned to (Envoy runs under `taskset --cpu-list`); empty: no pinning.
    pub cpus: Vec<usize>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            concurrency: 2,
            drain_strategy: None,
            drain_time: None,
            log_level: "info".to_owned(),
            component_log_level: None,
            ready_timeout: Duration::from_secs(30),
            cpus: Vec::new(),
        }
    }
}

/// A running Envoy. Stopped on drop (SIGTERM, then kill after 10 s); its log is checked for
/// wasm failures by [`EnvoyProcess::shutdown`], or by drop if `shutdown` was not called.
/// The temp dir with the bootstrap and log is deleted unless the test fails, in which case its
/// path is printed.
pub struct EnvoyProcess {
    child: Child,
    bootstrap: Bootstrap,
    workdir: Option<TempDir>,
    dir_path: PathBuf,
    log_path: PathBuf,
    admin: ureq::Agent,
    final_check_done: bool,
}

/// A base id no other Envoy of this machine's test runs uses: process id and a per-process
/// counter (Envoy names its hot-restart shared memory and sockets after it).
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 100_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed) % 100
}

/// Gives every port-0 listener and a port-0 admin interface a free loopback port.
/// The body of the admin response to `path`; a failed request or body read is
/// [`EnvoyError::Admin`].
fn admin_body(
    path: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<String, EnvoyError> {
    let admin_error = |source| EnvoyError::Admin {
        path: path.to_owned(),
        source: Box::new(source),
    };
    response
        .map_err(admin_error)?
        .body_mut()
        .read_to_string()
        .map_err(admin_error)
}

fn assign_ports(bootstrap: &mut Bootstrap) -> Result<(), EnvoyError> {
    let reserve = || reserve_port().map_err(EnvoyError::io("reserving a loopback port"));
    if bootstrap.admin_port() == 0 {
        bootstrap.set_admin_port(reserve()?);
    }
    for listener in bootstrap.listeners_mut() {
        if listener.port() == 0 {
            listener.set_port(reserve()?);
        }
    }
    Ok(())
}

enum NotReady {
    Exited(ExitStatus),
    TimedOut,
}

impl EnvoyProcess {
    /// Starts Envoy on `bootstrap` and waits until it is ready. The admin port and listener
    /// ports that are 0 in `bootstrap` get free loopback ports (see [`Self::bootstrap`]).
    pub fn start(bootstrap: &Bootstrap, options: EnvoyOptions) -> Result<Self, EnvoyError> {
        let envoy = envoy_binary()?;
        let mut bootstrap = bootstrap.clone();
        assign_ports(&mut bootstrap)?;
        let workdir = tempfile::Builder::new()
            .prefix("envoy-")
            .tempdir()
            .map_err(EnvoyError::io("creating a temp dir"))?;
        let dir_path = workdir.path().to_path_buf();
        let config_path = dir_path.join("envoy.json");
        let log_path = dir_path.join("envoy.log");
        std::fs::write(&config_path, bootstrap.to_json())
            .map_err(EnvoyError::io(format!("writing {}", config_path.display())))?;
        let stdio_path = dir_path.join("stdio.log");
        let stdout = File::create(&stdio_path)
            .map_err(EnvoyError::io(format!("creating {}", stdio_path.display())))?;
        let stderr = stdout
            .try_clone()
            .map_err(EnvoyError::io("duplicating the stdio log handle"))?;

        let mut command = if options.cpus.is_empty() {
            Command::new(&envoy)
        } else {
            let cpus: Vec<String> = options.cpus.iter().map(ToString::to_string).collect();
            let mut taskset = Command::new("taskset");
            taskset.arg("--cpu-list").arg(cpus.join(",")).arg(&envoy);
            taskset
        };
        command
            .arg("-c")
            .arg(&config_path)
            .arg("--concurrency")
            .arg(options.concurrency.to_string())
            .arg("--base-id")
            .arg(unique_base_id().to_string())
            .arg("--log-path")
            .arg(&log_path)
            .args(["-l", &options.log_level])
            // Envoy flushes its log every 10 s by default; tests read it while it runs.
            .args(["--file-flush-interval-msec", "100"]);
        if let Some(strategy) = options.drain_strategy {
            command.args(["--drain-strategy", strategy.as_arg()]);
        }
        if let Some(drain_time) = options.drain_time {
            command
                .arg("--drain-time-s")
                .arg(drain_time.as_secs().to_string());
        }
        if let Some(levels) = &options.component_log_level {
            command.args(["--component-log-level", levels]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(EnvoyError::io(format!("starting {}", envoy.display())))?;

        let admin = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build(),
        );
        let mut process = Self {
            child,
            bootstrap,
            workdir: Some(workdir),
            dir_path,
            log_path,
            admin,
            final_check_done: false,
        };
        match process.wait_ready(options.ready_timeout) {
            Ok(()) => Ok(process),
            Err(not_ready) => {
                process.stop();
                process.final_check_done = true;
                process.keep_files();
                let log_tail = process.startup_log_tail();
                let log_path = process.log_path.clone();
                Err(match not_ready {
                    NotReady::Exited(status) => EnvoyError::Exited {
                        status,
                        log_path,
                        log_tail,
                    },
                    NotReady::TimedOut => EnvoyError::NotReady {
                        waited: options.ready_timeout,
                        log_path,
                        log_tail,
                    },
                })
            }
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(NotReady::Exited(status));
            }
            if self
                .admin_get("/ready")
                .is_ok_and(|body| body.trim() == "LIVE")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn startup_log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let stdio = std::fs::read_to_string(self.dir_path.join("stdio.log")).unwrap_or_default();
        let mut tail = log_tail(&log, TAIL_LINES);
        if !stdio.trim().is_empty() {
            tail.push_str("\n--- envoy stdout/stderr ---\n");
            tail.push_str(&log_tail(&stdio, TAIL_LINES));
        }
        tail
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The bootstrap Envoy runs, with the ports the harness assigned.
    pub fn bootstrap(&self) -> &Bootstrap {
        &self.bootstrap
    }

    /// `http://127.0.0.1:<admin port>`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.bootstrap.admin_port())
    }

    /// Where the listener `name` accepts connections.
    pub fn listener_addr(&self, name: &str) -> Result<SocketAddr, EnvoyError> {
        let listener = self
            .bootstrap
            .listeners()
            .iter()
            .find(|listener| listener.name() == name)
            .ok_or_else(|| EnvoyError::UnknownListener(name.to_owned()))?;
        let ip = listener
            .socket_address()
            .address
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        Ok(SocketAddr::new(ip, listener.port()))
    }

    /// The Envoy log file (flushed every 100 ms while Envoy runs, fully on exit).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The Envoy log as written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// GETs an admin path (e.g. `/server_info`) and returns the body; non-2xx is an error.
    pub fn admin_get(&self, path: &str) -> Result<String, EnvoyError> {
        let response = self.admin.get(format!("{}{path}", self.admin_url())).call();
        admin_body(path, response)
    }

    /// POSTs to an admin path (e.g. `/drain_listeners?graceful`) and returns the body.
    pub fn post_admin(&self, path: &str) -> Result<String, EnvoyError> {
        let response = self
            .admin
            .post(format!("{}{path}", self.admin_url()))
            .send_empty();
        admin_body(path, response)
    }

    /// `/stats?format=json`, parsed: `{"stats": [{"name": .., "value": ..}, .., {"histograms": ..}]}`.
    pub fn stats_json(&self) -> Result<serde_json::Value, EnvoyError> {
        let path = "/stats?format=json";
        serde_json::from_str(&self.admin_get(path)?).map_err(|source| EnvoyError::AdminJson {
            path: path.to_owned(),
            source,
        })
    }

    /// The value of counter or gauge `name` (e.g. `cluster.backend.upstream_rq_200`), `None` if
    /// Envoy has no such stat.
    pub fn stat(&self, name: &str) -> Result<Option<u64>, EnvoyError> {
        let stats = self.stats_json()?;
        Ok(stats["stats"].as_array().and_then(|entries| {
            entries
                .iter()
                .find(|entry| entry["name"] == name)
                .and_then(|entry| entry["value"].as_u64())
        }))
    }

    /// Polls stat `name` until `condition` holds on its value, for at most `timeout` (counters
    /// of a finished request can land just after the client saw the response).
    pub fn wait_for_stat(
        &self,
        name: &str,
        timeout: Duration,
        condition: impl Fn(u64) -> bool,
    ) -> Result<u64, EnvoyError> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.stat(name)?;
            if let Some(value) = value.filter(|value| condition(*value)) {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(EnvoyError::StatTimeout {
                    name: name.to_owned(),
                    waited: timeout,
                    last: value,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `/stats/prometheus`.
    pub fn prometheus(&self) -> Result<String, EnvoyError> {
        self.admin_get("/stats/prometheus")
    }

    /// The value of the unlabelled sample `metric` in `/stats/prometheus` (see [`prometheus_sample`]).
    ///
    /// [`prometheus_sample`]: crate::prometheus_sample
    pub fn prometheus_value(&self, metric: &str) -> Result<Option<f64>, EnvoyError> {
        Ok(crate::prometheus_sample(&self.prometheus()?, metric))
    }

    /// Panics, quoting the lines, if the log so far shows a wasm panic, a V8 trap
    /// (`Uncaught RuntimeError`) or a `[critical][wasm]` line. Lines written in the last
    /// ~100 ms may not be flushed yet; [`Self::shutdown`] checks the complete log.
    #[allow(clippy::panic)] // An assertion for tests: failing loudly is its job.
    pub fn assert_no_wasm_failures(&self) {
        let log = self.log();
        let failures = wasm_failures(&log);
        if !failures.is_empty() {
            panic!(
                "the Envoy log {} shows wasm failures:\n{}",
                self.log_path.display(),
                failures.join("\n")
            );
        }
    }

    /// Stops Envoy, then checks its complete log with [`Self::assert_no_wasm_failures`].
    pub fn shutdown(mut self) {
        self.stop();
        self.final_check_done = true;
        self.assert_no_wasm_failures();
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        // Best effort: the process may already be gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Keeps the temp dir (bootstrap, log) on disk and says where it is.
    fn keep_files(&mut self) {
        if let Some(workdir) = self.workdir.take() {
            let kept = workdir.keep();
            eprintln!("envoy files kept in {} (log: envoy.log)", kept.display());
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.keep_files();
            return;
        }
        if !self.final_check_done {
            self.final_check_done = true;
            let log = self.log();
            if !wasm_failures(&log).is_empty() {
                self.keep_files();
                self.assert_no_wasm_failures();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_configs::Listener;

    #[test]
    fn base_ids_differ_within_a_process() {
        assert_ne!(unique_base_id(), unique_base_id());
    }

    #[test]
    fn zero_ports_get_free_ports_and_fixed_ports_stay() {
        let mut bootstrap = Bootstrap::new(0)
            .admin_cluster("admin")
            .listener(Listener::http("picked", 0))
            .listener(Listener::http("fixed", 18080));
        assert!(assign_ports(&mut bootstrap).is_ok());
        let admin_port = bootstrap.admin_port();
        assert_ne!(admin_port, 0);
        assert_ne!(bootstrap.listeners()[0].port(), 0);
        assert_ne!(bootstrap.listeners()[0].port(), admin_port);
        assert_eq!(bootstrap.listeners()[1].port(), 18080);
        assert!(bootstrap
            .to_json()
            .contains(&format!("\"port_value\": {admin_port}")));
    }
}

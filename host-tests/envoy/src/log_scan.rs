//! Scanning Envoy logs for wasm failures (panics, V8 traps, critical wasm lines).

/// Substrings of an Envoy log line that mean a wasm VM panicked, trapped or failed critically.
pub const WASM_FAILURE_MARKERS: [&str; 3] =
    ["panicked at", "Uncaught RuntimeError", "[critical][wasm]"];

/// The lines of `log` that contain any of [`WASM_FAILURE_MARKERS`].
pub fn wasm_failures(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            WASM_FAILURE_MARKERS
                .iter()
                .any(|marker| line.contains(marker))
        })
        .collect()
}

/// The last `lines` lines of `log`, joined with newlines.
pub fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_panics_traps_and_critical_wasm_lines_only() {
        let log = "\
[2025-01-01 00:00:00.000][10][info][main] starting main dispatch loop
[2025-01-01 00:00:00.001][11][critical][wasm] [source/extensions/common/wasm/context.cc:1204] wasm log fixture: panicked at src/lib.rs:3:5: boom
[2025-01-01 00:00:00.002][11][error][wasm] [source/extensions/common/wasm/wasm_vm.cc:38] Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable
[2025-01-01 00:00:00.003][11][info][wasm] wasm log fixture: bytes done, path=/
[2025-01-01 00:00:00.004][10][critical][main] unrelated critical line";
        let failures = wasm_failures(log);
        assert_eq!(failures.len(), 2);
        assert!(failures[0].contains("boom"));
        assert!(failures[1].contains("unreachable"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(log_tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(log_tail("a", 5), "a");
    }
}

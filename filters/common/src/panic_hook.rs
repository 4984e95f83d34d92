//! Making traps explain themselves: a panic hook that writes the panic's message and location to
//! the host log at Critical level before the VM traps, and (wasm32) logging set-up.

use std::panic::PanicHookInfo;

/// `panic at <file>:<line>:<column>: <message>` for a panic.
pub fn panic_message(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic payload>");
    match info.location() {
        Some(location) => format!(
            "panic at {}:{}:{}: {message}",
            location.file(),
            location.line(),
            location.column()
        ),
        None => format!("panic: {message}"),
    }
}

/// The host log level matching a `log` level filter (`Off` becomes `Critical`, the level at which
/// the SDK logs nothing).
pub fn host_log_level(level: log::LevelFilter) -> proxy_wasm::types::LogLevel {
    use proxy_wasm::types::LogLevel;
    match level {
        log::LevelFilter::Off => LogLevel::Critical,
        log::LevelFilter::Error => LogLevel::Error,
        log::LevelFilter::Warn => LogLevel::Warn,
        log::LevelFilter::Info => LogLevel::Info,
        log::LevelFilter::Debug => LogLevel::Debug,
        log::LevelFilter::Trace => LogLevel::Trace,
    }
}

/// Installs a panic hook that logs [`panic_message`] at Critical level through the host, so a
/// trap always leaves its reason in the Envoy log. Replaces the SDK's hook (which itself panics
/// if logging fails).
#[cfg(target_arch = "wasm32")]
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let critical = proxy_wasm::types::LogLevel::Critical as u32;
        // Nothing more can be done if the host refuses the log line.
        let _ = crate::ffi::log(critical, &panic_message(info));
    }));
}

/// Routes the `log` crate to the host log at `level` (via `proxy_wasm::set_log_level`) and
/// installs [`install_panic_hook`]. Call it first thing in `proxy_wasm::main!`.
#[cfg(target_arch = "wasm32")]
pub fn init_logging(level: log::LevelFilter) {
    proxy_wasm::set_log_level(host_log_level(level));
    install_panic_hook();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_wasm::types::LogLevel;

    #[test]
    fn log_levels_map_to_host_levels() {
        assert_eq!(host_log_level(log::LevelFilter::Off), LogLevel::Critical);
        assert_eq!(host_log_level(log::LevelFilter::Warn), LogLevel::Warn);
        assert_eq!(host_log_level(log::LevelFilter::Trace), LogLevel::Trace);
    }
}

//! Logging that cannot trap: a `log` logger writing to the host log through meshkit's own import
//! (a refused or failed log line is dropped, never a panic), and a panic hook that writes the
//! panic's message and location at Critical level the same way before the VM traps.
//!
//! The SDK's logger and panic hook (`proxy_wasm::set_log_level`) unwrap the host's answer, so a
//! host that refuses a log line traps the VM; [`init_logging`] replaces both. Do not call
//! `proxy_wasm::set_log_level` as well: the first logger installed stays.

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

/// The host log level of a `log` record level.
#[cfg(any(test, target_arch = "wasm32"))]
fn host_level(level: log::Level) -> proxy_wasm::types::LogLevel {
    use proxy_wasm::types::LogLevel;
    match level {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Trace => LogLevel::Trace,
    }
}

/// What a failing `Display` implementation leaves at the end of a log line.
#[cfg(any(test, target_arch = "wasm32"))]
const FORMAT_FAILED: &str = " <formatting failed>";

/// A log line's text. Unlike `to_string` / `format!`, a `Display` implementation that returns an
/// error does not panic: the line keeps what was written, marked with [`FORMAT_FAILED`].
#[cfg(any(test, target_arch = "wasm32"))]
fn render(args: std::fmt::Arguments<'_>) -> String {
    if let Some(text) = args.as_str() {
        return text.to_owned();
    }
    let mut line = String::new();
    if std::fmt::write(&mut line, args).is_err() {
        line.push_str(FORMAT_FAILED);
    }
    line
}

#[cfg(target_arch = "wasm32")]
pub use host::init_logging;

#[cfg(target_arch = "wasm32")]
mod host {
    use super::{host_level, panic_message, render};
    use crate::ffi;
    use proxy_wasm::types::LogLevel;

    /// Writes `log` records to the host log; drops a line the host refuses.
    struct HostLogger;

    static LOGGER: HostLogger = HostLogger;

    impl log::Log for HostLogger {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::max_level()
        }

        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                let level = host_level(record.level()) as u32;
                // Nothing better can be done with a line the host refuses.
                let _ = ffi::log(level, &render(*record.args()));
            }
        }

        fn flush(&self) {}
    }

    /// Installs a panic hook that logs [`panic_message`](super::panic_message) at Critical
    /// level through the host, so a trap always leaves its reason in the Envoy log.
    fn install_panic_hook() {
        std::panic::set_hook(Box::new(|info| {
            // Nothing more can be done if the host refuses the log line.
            let _ = ffi::log(LogLevel::Critical as u32, &panic_message(info));
        }));
    }

    /// Routes the `log` crate to the host log at `level` through a logger that cannot trap, and
    /// installs the panic hook. Call it first thing in `proxy_wasm::main!`; calling it
    /// again only changes the level.
    pub fn init_logging(level: log::LevelFilter) {
        // Fails only when a logger is already installed (an earlier call): keep that one.
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(level);
        install_panic_hook();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[test]
    fn record_levels_map_to_host_levels() {
        assert_eq!(host_level(log::Level::Error) as u32, 4);
        assert_eq!(host_level(log::Level::Warn) as u32, 3);
        assert_eq!(host_level(log::Level::Info) as u32, 2);
        assert_eq!(host_level(log::Level::Debug) as u32, 1);
        assert_eq!(host_level(log::Level::Trace) as u32, 0);
    }

    struct Failing;

    impl fmt::Display for Failing {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("half")?;
            Err(fmt::Error)
        }
    }

    #[test]
    fn a_failing_display_marks_the_line_instead_of_panicking() {
        assert_eq!(
            render(format_args!("value {} end", Failing)),
            "value half <formatting failed>"
        );
        assert_eq!(render(format_args!("plain")), "plain");
        assert_eq!(render(format_args!("n={}", 4)), "n=4");
    }
}

//! The panic hook's message names the panic's location and payload. A separate test binary,
//! because panic hooks are process-wide.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshkit::panic_hook::panic_message;
use std::sync::Mutex;

static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[test]
fn message_names_location_and_payload() {
    std::panic::set_hook(Box::new(|info| {
        CAPTURED.lock().unwrap().push(panic_message(info));
    }));
    let line = line!() + 1;
    let _ = std::panic::catch_unwind(|| panic!("budget exhausted for {}", "tenant-a"));
    let _ = std::panic::catch_unwind(|| std::panic::panic_any(42u8));
    let _ = std::panic::take_hook();

    let captured = CAPTURED.lock().unwrap();
    let expected_prefix = format!("panic at {}:{line}:", file!());
    assert!(captured[0].starts_with(&expected_prefix), "{}", captured[0]);
    assert!(
        captured[0].ends_with(": budget exhausted for tenant-a"),
        "{}",
        captured[0]
    );
    assert!(
        captured[1].ends_with(": <non-string panic payload>"),
        "{}",
        captured[1]
    );
}

//! Fuzzes the config loader: any bytes in, a `Spec` or a report out, never a panic.
//! The report is rendered too, since spans into odd text are where rendering breaks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else { return };
    // A path that does not exist: file checks fail the same way every run.
    let path = std::path::Path::new("/nonexistent/muster.toml");
    if let Err(error) = muster::config::from_source(path, path, source.to_owned()) {
        let report = error.into_report();
        let _ = report.render_plain();
        let _ = report.to_json();
    }
});

//! Fuzzes the notify datagram parser: any bytes a process sends to `NOTIFY_SOCKET`
//! give a message or an error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = muster::supervisor::notify::parse(data);
});

//! libFuzzer entry point for [`wharf_fuzz::targets::request`] (run with `cargo fuzz run request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf_fuzz::targets::request::run(data));

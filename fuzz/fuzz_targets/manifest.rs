//! libFuzzer entry point for [`wharf_fuzz::targets::manifest`] (run with `cargo fuzz run manifest`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf_fuzz::targets::manifest::run(data));

//! libFuzzer entry point for [`wharf_fuzz::targets::reference`] (run with `cargo fuzz run reference`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf_fuzz::targets::reference::run(data));

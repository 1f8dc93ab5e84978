//! libFuzzer entry point for [`wharf_fuzz::targets::tar_apply`] (run with `cargo fuzz run tar_apply`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf_fuzz::targets::tar_apply::run(data));

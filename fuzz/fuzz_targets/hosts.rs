//! libFuzzer entry point for [`wharf_fuzz::targets::hosts`] (run with `cargo fuzz run hosts`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf_fuzz::targets::hosts::run(data));

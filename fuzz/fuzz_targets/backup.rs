#![no_main]
// The same check the stable test runs (rackseed::fuzzing::backup), under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rackseed::fuzzing::backup(data));

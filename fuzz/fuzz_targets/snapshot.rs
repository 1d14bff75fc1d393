#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = serin_fuzz::checks::snapshot(data) {
        panic!("{broken}");
    }
    if let Err(broken) = serin_fuzz::sdk_checks::snapshot_delta(data) {
        panic!("{broken}");
    }
});

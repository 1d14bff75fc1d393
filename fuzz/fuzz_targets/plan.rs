#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = serin_fuzz::checks::plan(data) {
        panic!("{broken}");
    }
});

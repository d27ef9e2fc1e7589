#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomcast::fuzzing::publish_json(data));

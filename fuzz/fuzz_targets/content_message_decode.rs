#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ggen_p2p::fuzzing::content_message_decode(data));

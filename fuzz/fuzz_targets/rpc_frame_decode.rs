#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ggen_p2p::fuzzing::rpc_frame_decode(data));

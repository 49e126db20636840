//! Fuzz target: a WebSocket text frame from a client, as the server decodes it.
//! The checks live in `chatroom_fuzz::client_frame` (fuzz/src/lib.rs), shared with
//! the corpus replay in tests/fuzz_corpus.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::client_frame(data));

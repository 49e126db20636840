//! Fuzz target: room names, usernames, message texts and client ids, as the server validates them.
//! The checks live in `chatroom_fuzz::names` (fuzz/src/lib.rs), shared with
//! the corpus replay in tests/fuzz_corpus.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::names(data));

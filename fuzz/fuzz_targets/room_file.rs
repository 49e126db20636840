//! Fuzz target: a whole room file of arbitrary bytes, opened, read and appended to by the JSON-lines store.
//! The checks live in `chatroom_fuzz::room_file` (fuzz/src/lib.rs), shared with
//! the corpus replay in tests/fuzz_corpus.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::room_file(data));

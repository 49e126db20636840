//! Fuzz target: one line of a room file, as the JSON-lines store reads, rewrites and redacts it.
//! The checks live in `chatroom_fuzz::event_line` (fuzz/src/lib.rs), shared with
//! the corpus replay in tests/fuzz_corpus.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::event_line(data));

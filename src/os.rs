//! What the process asks of the operating system at start: as many open
//! files as it is allowed (every connection and every open room is one).

/// Raises the soft open-file limit to the hard one; the limit now in force
/// (or why it could not be read).
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The soft open-file limit now in force, if it can be read.
pub fn open_file_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _hard)| soft)
}

//! Reading whole JSON lines out of an append-only file by `seq`, without an
//! index and without reading the file from the start.
//!
//! Every line of a room file is one event whose `seq` is larger than the
//! previous line's (see `event_line`). That makes the file itself a sorted
//! array: a binary search over byte offsets finds any seq in about
//! log2(size / 4 KiB) reads, and the latest events are read backwards from
//! the end. Lines that do not parse (a damaged file) are skipped with a
//! warning, never fatal.
//!
//! Reads count only the events a `counted` predicate picks (posts, for
//! message history), but return every event in between.
//!
//! All functions take `len`, the number of bytes known to hold only complete
//! lines, and never look past it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::event_line;
use crate::model::StoredEvent;

/// Bytes read per step when looking for line boundaries.
const CHUNK: usize = 16 * 1024;
/// Below this many bytes the binary search becomes a forward scan.
const SCAN_WINDOW: u64 = 32 * 1024;

/// The seq of one line, or `None` when the line is damaged.
fn line_id(line: &[u8]) -> Option<u64> {
    event_line::seq_of(line)
}

/// Reads up to `max` bytes at `offset`, stopping at `len`.
fn read_at(file: &File, offset: u64, max: usize, len: u64) -> io::Result<Vec<u8>> {
    let want = max.min(len.saturating_sub(offset) as usize);
    let mut buf = vec![0; want];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// The line that starts exactly at `start`: its bytes (without the newline)
/// and the offset of the next line. `None` at `len`.
fn line_at(file: &File, start: u64, len: u64) -> io::Result<Option<(Vec<u8>, u64)>> {
    let mut line = Vec::new();
    let mut pos = start;
    while pos < len {
        let chunk = read_at(file, pos, CHUNK, len)?;
        if let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&chunk[..nl]);
            return Ok(Some((line, pos + nl as u64 + 1)));
        }
        line.extend_from_slice(&chunk);
        pos += chunk.len() as u64;
    }
    // `len` always ends at a newline, so this is only reached at the end.
    Ok(if line.is_empty() { None } else { Some((line, len)) })
}

/// Offset of the first line that starts at or after `pos` (`len` if none).
fn next_line_start(file: &File, pos: u64, len: u64) -> io::Result<u64> {
    if pos == 0 {
        return Ok(0);
    }
    let mut at = pos - 1; // a line starts at `pos` if the byte before it is '\n'
    while at < len {
        let chunk = read_at(file, at, CHUNK, len)?;
        if let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            return Ok(at + nl as u64 + 1);
        }
        at += chunk.len() as u64;
    }
    Ok(len)
}

/// Offset of the first line whose seq is `>= target` (`len` if none).
pub fn offset_of_first_seq_at_least(file: &File, len: u64, target: u64) -> io::Result<u64> {
    // Invariant: every line starting before `lo` has an id below `target`.
    let (mut lo, mut hi) = (0u64, len);
    while hi - lo > SCAN_WINDOW {
        let mid = lo + (hi - lo) / 2;
        let start = next_line_start(file, mid, len)?;
        match first_parsable_line(file, start, hi)? {
            Some((line_start, next, id)) if id < target => lo = next.max(line_start + 1),
            Some((line_start, _, _)) => hi = line_start.max(lo),
            None => hi = mid,
        }
    }
    let mut pos = lo;
    while let Some((line, next)) = line_at(file, pos, len)? {
        if line_id(&line).is_some_and(|id| id >= target) {
            return Ok(pos);
        }
        pos = next;
    }
    Ok(len)
}

/// The first line from `start` (and before `limit`) that parses: its start,
/// the next line's start and its id.
fn first_parsable_line(file: &File, mut start: u64, limit: u64) -> io::Result<Option<(u64, u64, u64)>> {
    while start < limit {
        let Some((line, next)) = line_at(file, start, limit.max(start + 1))? else {
            return Ok(None);
        };
        if let Some(id) = line_id(&line) {
            return Ok(Some((start, next, id)));
        }
        start = next;
    }
    Ok(None)
}

/// The largest seq of any line up to `len` (0 if none): a scan of the
/// whole file, for a file found out of order.
pub fn largest_seq(file: &File, len: u64) -> io::Result<u64> {
    let mut largest = 0;
    let mut pos = 0;
    let mut pending: Vec<u8> = Vec::new();
    while pos < len {
        let chunk = read_at(file, pos, CHUNK * 64, len)?;
        pos += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        let Some(last_nl) = pending.iter().rposition(|&b| b == b'\n') else { continue };
        largest = pending[..last_nl].split(|&b| b == b'\n').filter_map(line_id).fold(largest, u64::max);
        pending.drain(..=last_nl);
    }
    Ok(pending.split(|&b| b == b'\n').filter_map(line_id).fold(largest, u64::max))
}

/// The line holding exactly `seq`: its offset and bytes, if there is one.
pub fn line_with_seq(file: &File, len: u64, seq: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    let start = offset_of_first_seq_at_least(file, len, seq)?;
    Ok(line_at(file, start, len)?.filter(|(line, _)| line_id(line) == Some(seq)).map(|(line, _)| (start, line)))
}

/// Reads events forward from the line starting at `start`, until `limit`
/// events that `counted` picks were read or one reaches seq `before`.
pub fn read_forward(
    file: &File,
    start: u64,
    len: u64,
    limit: usize,
    before: Option<u64>,
    counted: &dyn Fn(&StoredEvent) -> bool,
    path_hint: &str,
) -> io::Result<Vec<StoredEvent>> {
    let mut out = Vec::new();
    let mut count = 0;
    let mut pos = start;
    let mut pending = Vec::new();
    while count < limit && pos < len {
        let chunk = read_at(file, pos, CHUNK * 4, len)?;
        pos += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        let mut consumed = 0;
        while let Some(nl) = pending[consumed..].iter().position(|&b| b == b'\n') {
            let line = &pending[consumed..consumed + nl];
            consumed += nl + 1;
            let Some(event) = event_line::parse(line, path_hint) else { continue };
            if before.is_some_and(|b| event.seq >= b) {
                return Ok(out);
            }
            count += usize::from(counted(&event));
            out.push(event);
            if count == limit {
                return Ok(out);
            }
        }
        pending.drain(..consumed);
    }
    Ok(out)
}

/// Reads, oldest first, the events that end at or before byte `end`, going
/// back until `limit` of them are ones `counted` picks.
pub fn read_backward(
    file: &File,
    end: u64,
    limit: usize,
    counted: &dyn Fn(&StoredEvent) -> bool,
    path_hint: &str,
) -> io::Result<Vec<StoredEvent>> {
    let mut newest_first = Vec::new();
    let mut count = 0;
    let mut tail: Vec<u8> = Vec::new(); // bytes of a line whose start is not read yet
    let mut pos = end;
    while count < limit && pos > 0 {
        let step = (CHUNK as u64 * 4).min(pos);
        pos -= step;
        let mut chunk = vec![0; step as usize];
        file.read_exact_at(&mut chunk, pos)?;
        chunk.extend_from_slice(&tail);
        // Every line but the first in `chunk` is complete (the first may
        // have started earlier, unless we reached the file's start).
        let body = if chunk.last() == Some(&b'\n') { &chunk[..chunk.len() - 1] } else { &chunk[..] };
        let mut lines = body.rsplit(|&b| b == b'\n').peekable();
        let mut leftover: &[u8] = &[];
        while let Some(line) = lines.next() {
            if lines.peek().is_none() && pos > 0 {
                leftover = line;
                break;
            }
            if line.is_empty() {
                continue;
            }
            if let Some(event) = event_line::parse(line, path_hint) {
                count += usize::from(counted(&event));
                newest_first.push(event);
                if count == limit {
                    break;
                }
            }
        }
        let mut next_tail = leftover.to_vec();
        next_tail.push(b'\n');
        tail = next_tail;
    }
    newest_first.reverse();
    Ok(newest_first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;
    use std::io::Write;

    fn all(_: &StoredEvent) -> bool {
        true
    }

    fn file_with_ids(ids: impl Iterator<Item = u64>, pad: usize) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for id in ids {
            let m = Message {
                id,
                room: "r".into(),
                user: "u".into(),
                text: "x".repeat(pad + (id as usize % 7)),
                ts: "2026-01-01T00:00:00Z".into(),
                client_id: format!("c{id}"),
                ..Message::default()
            };
            writeln!(f, "{}", serde_json::to_string(&m).unwrap()).unwrap();
        }
        f.flush().unwrap();
        let len = f.as_file().metadata().unwrap().len();
        (f, len)
    }

    fn ids(events: &[StoredEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn binary_search_finds_every_id() {
        let (f, len) = file_with_ids((1..=3000).map(|i| i * 2), 40);
        for target in [0, 1, 2, 3, 777, 1000, 4000, 5999, 6000] {
            let off = offset_of_first_seq_at_least(f.as_file(), len, target).unwrap();
            let got = read_forward(f.as_file(), off, len, 1, None, &all, "t").unwrap();
            let want = (1..=3000).map(|i| i * 2).find(|&i| i >= target);
            assert_eq!(got.first().map(|e| e.seq), want, "target {target}");
        }
        assert_eq!(offset_of_first_seq_at_least(f.as_file(), len, 6001).unwrap(), len);
    }

    #[test]
    fn reads_backward_across_chunks() {
        let (f, len) = file_with_ids(1..=5000, 300);
        assert_eq!(ids(&read_backward(f.as_file(), len, 3, &all, "t").unwrap()), vec![4998, 4999, 5000]);
        let every = read_backward(f.as_file(), len, 10_000, &all, "t").unwrap();
        assert_eq!(ids(&every), (1..=5000).collect::<Vec<_>>());
        let off = offset_of_first_seq_at_least(f.as_file(), len, 2500).unwrap();
        assert_eq!(ids(&read_backward(f.as_file(), off, 2, &all, "t").unwrap()), vec![2498, 2499]);
    }

    #[test]
    fn reads_forward_with_upper_bound() {
        let (f, len) = file_with_ids(1..=100, 10);
        let off = offset_of_first_seq_at_least(f.as_file(), len, 11).unwrap();
        assert_eq!(ids(&read_forward(f.as_file(), off, len, 50, Some(15), &all, "t").unwrap()), vec![11, 12, 13, 14]);
    }

    #[test]
    fn damaged_lines_are_skipped() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for id in 1..=2000u64 {
            if id == 1000 {
                writeln!(f, "{{not json").unwrap();
            } else {
                writeln!(f, "{{\"id\":{id},\"room\":\"r\",\"user\":\"u\",\"text\":\"{}\",\"ts\":\"t\",\"client_id\":\"c\"}}", "y".repeat(50)).unwrap();
            }
        }
        let len = f.as_file().metadata().unwrap().len();
        let off = offset_of_first_seq_at_least(f.as_file(), len, 999).unwrap();
        assert_eq!(ids(&read_forward(f.as_file(), off, len, 3, None, &all, "t").unwrap()), vec![999, 1001, 1002]);
        assert_eq!(ids(&read_backward(f.as_file(), len, 2000, &all, "t").unwrap()).len(), 1999);
    }
}

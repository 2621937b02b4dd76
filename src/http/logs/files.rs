//! A run's log files on disk: where they are, the last lines of a stream across its
//! rotated files, and a [`Follower`] that reads what is appended, through rotations.
//!
//! The runner ([`crate::train::logfile`]) appends a command's stdout and stderr to
//! `DATA_DIR/runs/ID/logs/stdout.log` and `stderr.log`. When one reaches
//! `runs.log_max_bytes` it is renamed `stdout.log.1` (older ones shift to `.2`, … up to
//! `runs.log_keep`; the oldest goes) and a new one is created; with `runs.log_keep = 0`
//! the file is emptied in place instead. Read in order, `…, .2, .1, stdout.log` is one
//! stream of bytes, so a line may even straddle two files.
//!
//! Everything here is blocking file I/O, for blocking threads. Memory is bounded: the
//! tail is found by reading blocks backwards from the end, never the whole file, and a
//! follower holds one block and at most one line ([`MAX_LINE_BYTES`]).
//!
//! Files are told apart by device and inode, which a rename keeps: that is how a
//! rotation is noticed (the name now holds another file), how a file seen twice while
//! the names shift is skipped, and what a [`Position`] names.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use crate::domain::{LogStream, RunLayout};
use crate::train::logfile::{rotated, STDERR_LOG, STDOUT_LOG};

/// Bytes read at a time, backwards when looking for the tail, forwards when following.
const BLOCK: usize = 16 * 1024;
/// A longer line is sent in pieces of this size, so that a follower never holds more
/// of one (a command printing megabytes without a newline cannot grow it).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most rotated files looked at (`runs.log_keep` is at most 100).
const MAX_ROTATED: u32 = 1000;

/// The current file of `stream`: `stdout.log` or `stderr.log`.
pub fn file_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => STDOUT_LOG,
        LogStream::Stderr => STDERR_LOG,
    }
}

/// The current file of a rank's stream: `RUN_DIR/logs/stdout.log` for rank 0,
/// `RUN_DIR/logs/rank-N/stdout.log` for the others.
pub fn log_path(layout: &RunLayout, rank: u32, stream: LogStream) -> PathBuf {
    layout.rank_logs(rank).join(file_name(stream))
}

/// A file's identity, kept across renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A place in a stream: just after byte `offset` of one file. The id of a `line`
/// event, so a client that reconnects goes on right after the last line it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    file: FileId,
    offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.file.dev, self.file.ino, self.offset)
    }
}

impl std::str::FromStr for Position {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let mut parts = s.trim().splitn(3, '-').map(str::parse::<u64>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(dev)), Some(Ok(ino)), Some(Ok(offset))) => Ok(Self {
                file: FileId { dev, ino },
                offset,
            }),
            _ => Err(()),
        }
    }
}

/// Opens `path`; `None` when there is no such file.
fn open(path: &Path) -> io::Result<Option<(File, FileId)>> {
    match File::open(path) {
        Ok(file) => {
            let id = FileId::of(&file.metadata()?);
            Ok(Some((file, id)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// One file of a stream as it was when opened.
struct Segment {
    file: File,
    id: FileId,
    /// Its size when opened: what the tail is taken from.
    len: u64,
    /// Whether it was opened by the current name (`stdout.log`), not a rotated one.
    current: bool,
}

/// The files of one stream, newest first, opened as the backward scan needs them.
struct Segments {
    path: PathBuf,
    open: Vec<Segment>,
    /// The next rotated file to try.
    next_rotated: u32,
    /// No older file is left.
    exhausted: bool,
}

impl Segments {
    fn new(path: &Path) -> io::Result<Self> {
        let mut segments = Self {
            path: path.to_path_buf(),
            open: Vec::new(),
            next_rotated: 1,
            exhausted: false,
        };
        if let Some((file, id)) = open(path)? {
            let len = file.metadata()?.len();
            segments.open.push(Segment {
                file,
                id,
                len,
                current: true,
            });
        }
        Ok(segments)
    }

    /// Segment `i` (0 the newest), opening older files as needed; `None` past the
    /// oldest. A file already open is skipped: the names shifted while they were
    /// being opened (a rotation), and the next name holds the next older file.
    fn get(&mut self, i: usize) -> io::Result<Option<&Segment>> {
        while self.open.len() <= i && !self.exhausted {
            if self.next_rotated > MAX_ROTATED {
                self.exhausted = true;
                break;
            }
            let path = rotated(&self.path, self.next_rotated);
            self.next_rotated += 1;
            match open(&path)? {
                None => self.exhausted = true,
                Some((_, id)) if self.open.iter().any(|s| s.id == id) => {}
                Some((file, id)) => {
                    let len = file.metadata()?.len();
                    self.open.push(Segment {
                        file,
                        id,
                        len,
                        current: false,
                    });
                }
            }
        }
        Ok(self.open.get(i))
    }
}

/// Where a tail starts: byte `offset` of segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    segment: usize,
    offset: u64,
    /// The byte budget ran out before the lines asked for: `offset` may be inside a
    /// line.
    cut: bool,
}

/// Finds where the last `lines` lines of the stream start, reading backwards.
///
/// With `whole_lines`, an unterminated last line (one the command is still writing)
/// is left out and not counted; otherwise it counts as a line. With a `budget`, the
/// tail holds at most that many bytes.
fn find_start(
    segments: &mut Segments,
    lines: usize,
    whole_lines: bool,
    budget: Option<u64>,
) -> io::Result<Start> {
    let Some(newest) = segments.get(0)? else {
        return Ok(Start {
            segment: 0,
            offset: 0,
            cut: false,
        });
    };
    if lines == 0 && !whole_lines {
        return Ok(Start {
            segment: 0,
            offset: newest.len,
            cut: false,
        });
    }
    // Skipping the unterminated end, until its newline.
    let mut skipping = whole_lines;
    // The next byte looked at is the last of the stream (or of its whole lines): a
    // newline there ends the last line, and starts none.
    let mut at_end = !whole_lines;
    let (mut found, mut taken) = (0usize, 0u64);
    let mut block = vec![0u8; BLOCK];
    let mut i = 0;
    loop {
        let Some(segment) = segments.get(i)? else {
            // The oldest file's start.
            return Ok(Start {
                segment: i.saturating_sub(1),
                offset: 0,
                cut: false,
            });
        };
        let mut hi = segment.len;
        while hi > 0 {
            let lo = hi.saturating_sub(BLOCK as u64);
            let read = &mut block[..(hi - lo) as usize];
            segment.file.read_exact_at(read, lo)?;
            for (j, &byte) in read.iter().enumerate().rev() {
                let after = lo + j as u64 + 1;
                let start = |cut| Start {
                    segment: i,
                    offset: after,
                    cut,
                };
                if skipping {
                    if byte == b'\n' {
                        skipping = false;
                        if lines == 0 {
                            return Ok(start(false));
                        }
                    }
                    continue;
                }
                if std::mem::take(&mut at_end) && byte == b'\n' {
                    taken += 1;
                    continue;
                }
                let full = budget.is_some_and(|budget| taken >= budget);
                if byte == b'\n' {
                    found += 1;
                    if found == lines || full {
                        return Ok(start(false));
                    }
                } else if full {
                    return Ok(start(true));
                }
                taken += 1;
            }
            hi = lo;
        }
        i += 1;
    }
}

/// The last `lines` lines of a stream (an unterminated last line counts), across its
/// rotated files when it needs them, and at most `budget` bytes of them: when the
/// lines are longer, the answer starts at the first line that fits whole (or holds
/// the end of one longer line). Empty when the stream has no file.
pub fn tail(path: &Path, lines: usize, budget: u64) -> io::Result<Vec<u8>> {
    let mut segments = Segments::new(path)?;
    let start = find_start(&mut segments, lines, false, Some(budget))?;
    let mut out = Vec::new();
    for i in (0..=start.segment).rev() {
        let Some(segment) = segments.get(i)? else {
            break;
        };
        let from = if i == start.segment { start.offset } else { 0 };
        let mut buf = vec![0u8; segment.len.saturating_sub(from) as usize];
        segment.file.read_exact_at(&mut buf, from)?;
        out.extend_from_slice(&buf);
    }
    if start.cut {
        if let Some(newline) = out.iter().position(|b| *b == b'\n') {
            if newline + 1 < out.len() {
                out.drain(..=newline);
            }
        }
    }
    Ok(out)
}

/// One line read by a [`Follower`], without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line's bytes (a piece of [`MAX_LINE_BYTES`] of a longer one).
    pub text: Vec<u8>,
    /// Just after the line's end: where to go on from.
    pub end: Position,
}

/// An open file and how far it has been read.
#[derive(Debug)]
struct Cursor {
    file: File,
    id: FileId,
    offset: u64,
}

/// Reads a stream's lines as they are appended, from a start in its past, through
/// rotations: when the current name holds a new file, the old one is read to its end
/// first, then any rotated in between, then the new one from its start.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    /// Older files still to be read to their end, the oldest first.
    pending: VecDeque<Cursor>,
    /// The file last opened by the current name.
    current: Option<Cursor>,
    /// Whether a file of this stream was seen yet: when the first one shows up, the
    /// rotated ones written meanwhile are read before it.
    seen_any: bool,
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    /// The last position read, for a line ended by the end of the stream.
    last: Option<Position>,
    /// Just after the last line handed out (or where the follower started): where a
    /// follower made again goes on from. `None` while no file was seen.
    handed: Option<Position>,
    block: Vec<u8>,
}

impl Follower {
    /// A follower whose first lines are the last `lines` whole lines of the stream at
    /// `path` (an unterminated last line comes once it ends).
    pub fn from_tail(path: &Path, lines: usize) -> io::Result<Self> {
        let mut segments = Segments::new(path)?;
        let start = find_start(&mut segments, lines, true, None)?;
        Self::starting_at(path, segments, start)
    }

    /// A follower that goes on right after `position`, as a reconnecting client asks.
    /// When that file is gone (rotated out), it starts at the oldest file left, whose
    /// lines all came after it.
    pub fn resume(path: &Path, position: Position) -> io::Result<Self> {
        let mut segments = Segments::new(path)?;
        let mut i = 0;
        let mut oldest = None;
        while let Some(segment) = segments.get(i)? {
            if segment.id == position.file && position.offset <= segment.len {
                let start = Start {
                    segment: i,
                    offset: position.offset,
                    cut: false,
                };
                return Self::starting_at(path, segments, start);
            }
            oldest = Some(i);
            i += 1;
        }
        let start = Start {
            segment: oldest.unwrap_or(0),
            offset: 0,
            cut: false,
        };
        Self::starting_at(path, segments, start)
    }

    fn starting_at(path: &Path, segments: Segments, start: Start) -> io::Result<Self> {
        let mut follower = Self {
            path: path.to_path_buf(),
            pending: VecDeque::new(),
            current: None,
            seen_any: !segments.open.is_empty(),
            partial: Vec::new(),
            last: None,
            handed: segments.open.get(start.segment).map(|segment| Position {
                file: segment.id,
                offset: start.offset,
            }),
            block: vec![0u8; BLOCK],
        };
        for (i, segment) in segments.open.into_iter().enumerate().rev() {
            if i > start.segment {
                continue;
            }
            let cursor = Cursor {
                file: segment.file,
                id: segment.id,
                offset: if i == start.segment { start.offset } else { 0 },
            };
            if segment.current {
                follower.current = Some(cursor);
            } else {
                follower.pending.push_back(cursor);
            }
        }
        Ok(follower)
    }

    /// Reads what was appended since the last call, until about `max` bytes of lines
    /// are in hand or nothing more is there; empty when nothing new ended a line.
    pub fn read(&mut self, max: usize) -> io::Result<Vec<Line>> {
        let mut lines = Vec::new();
        let mut bytes = 0;
        while bytes < max {
            if let Some(cursor) = self.pending.front_mut() {
                let n = cursor.file.read_at(&mut self.block, cursor.offset)?;
                if n == 0 {
                    self.pending.pop_front();
                    continue;
                }
                let (id, offset) = (cursor.id, cursor.offset);
                cursor.offset += n as u64;
                bytes += self.split(n, id, offset, &mut lines);
                continue;
            }
            let Some(cursor) = self.current.as_mut() else {
                if !self.appeared()? {
                    break;
                }
                continue;
            };
            let n = cursor.file.read_at(&mut self.block, cursor.offset)?;
            if n > 0 {
                let (id, offset) = (cursor.id, cursor.offset);
                cursor.offset += n as u64;
                bytes += self.split(n, id, offset, &mut lines);
                continue;
            }
            if !self.followed_rotation()? && !self.emptied()? {
                break;
            }
        }
        Ok(lines)
    }

    /// The unterminated last line, once the stream has ended.
    pub fn finish(&mut self) -> Option<Line> {
        if self.partial.is_empty() {
            return None;
        }
        let end = self.last?;
        self.handed = Some(end);
        Some(Line {
            text: std::mem::take(&mut self.partial),
            end,
        })
    }

    /// Just after the last line handed out, or where the follower started: what
    /// [`Follower::resume`] goes on from. `None` while the stream had no file, when
    /// every line to come is new.
    pub fn position(&self) -> Option<Position> {
        self.handed
    }

    /// Splits the first `n` bytes of the block, read at `offset` of file `id`, into
    /// lines; returns the bytes of the lines ended.
    fn split(&mut self, n: usize, id: FileId, offset: u64, lines: &mut Vec<Line>) -> usize {
        let mut ended = 0;
        let mut from = 0;
        let at = |i: usize| Position {
            file: id,
            offset: offset + i as u64,
        };
        while from < n {
            let rest = &self.block[from..n];
            let room = MAX_LINE_BYTES - self.partial.len();
            // A newline right after a full line still ends it.
            match rest.iter().take(room + 1).position(|b| *b == b'\n') {
                Some(newline) => {
                    self.partial.extend_from_slice(&rest[..newline]);
                    from += newline + 1;
                    let text = std::mem::take(&mut self.partial);
                    ended += text.len() + 1;
                    self.handed = Some(at(from));
                    lines.push(Line {
                        text,
                        end: at(from),
                    });
                }
                None if rest.len() <= room => {
                    self.partial.extend_from_slice(rest);
                    from = n;
                }
                None => {
                    // A piece of a long line, cut where a character starts: the
                    // first bytes of a character it would split go on to the next.
                    self.partial.extend_from_slice(&rest[..room]);
                    from += room;
                    let keep = unfinished_char(&self.partial);
                    let carry = self.partial.split_off(self.partial.len() - keep);
                    let text = std::mem::replace(&mut self.partial, carry);
                    ended += text.len();
                    let end = Position {
                        file: id,
                        offset: (offset + from as u64).saturating_sub(keep as u64),
                    };
                    self.handed = Some(end);
                    lines.push(Line { text, end });
                }
            }
        }
        self.last = Some(at(n));
        ended
    }

    /// Whether the current name holds a file not seen before (a rotation). If so, the
    /// old file is queued to be read to its end, then those rotated in between, and
    /// the new one becomes current.
    fn followed_rotation(&mut self) -> io::Result<bool> {
        let Some(old) = self.current.as_ref().map(|c| c.id) else {
            return Ok(false);
        };
        let now = match std::fs::metadata(&self.path) {
            Ok(meta) => FileId::of(&meta),
            // Renamed, and the new one not made yet.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if now == old {
            return Ok(false);
        }
        let Some((file, id)) = open(&self.path)? else {
            return Ok(false);
        };
        if id == old {
            return Ok(false);
        }
        let mut between = Vec::new();
        for n in 1..=MAX_ROTATED {
            match open(&rotated(&self.path, n))? {
                None => {
                    // The old file was removed (`runs.log_keep = 0`): nothing known
                    // came between.
                    between.clear();
                    break;
                }
                Some((_, found)) if found == old => break,
                Some((file, found)) if found != id => between.push(Cursor {
                    file,
                    id: found,
                    offset: 0,
                }),
                Some(_) => {}
            }
        }
        if let Some(cursor) = self.current.take() {
            self.pending.push_back(cursor);
        }
        self.pending.extend(between.into_iter().rev());
        self.current = Some(Cursor {
            file,
            id,
            offset: 0,
        });
        Ok(true)
    }

    /// Whether the current file was emptied in place (`runs.log_keep = 0`): then it is
    /// read again from its start. What was written past the last read before that is
    /// lost, as it is on disk.
    fn emptied(&mut self) -> io::Result<bool> {
        let Some(cursor) = self.current.as_mut() else {
            return Ok(false);
        };
        if cursor.file.metadata()?.len() >= cursor.offset {
            return Ok(false);
        }
        cursor.offset = 0;
        Ok(true)
    }

    /// Whether the stream's first file showed up. If so, it becomes current, after
    /// any rotated ones that were written before it was seen.
    fn appeared(&mut self) -> io::Result<bool> {
        let Some((file, id)) = open(&self.path)? else {
            return Ok(false);
        };
        if !self.seen_any {
            let mut older = Vec::new();
            for n in 1..=MAX_ROTATED {
                match open(&rotated(&self.path, n))? {
                    None => break,
                    Some((file, found)) if found != id => older.push(Cursor {
                        file,
                        id: found,
                        offset: 0,
                    }),
                    Some(_) => {}
                }
            }
            self.pending.extend(older.into_iter().rev());
        }
        self.seen_any = true;
        self.current = Some(Cursor {
            file,
            id,
            offset: 0,
        });
        Ok(true)
    }
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character whose
/// other bytes have not come yet.
fn unfinished_char(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(4) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 != 0x80 {
            let width = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if back < width { back } else { 0 };
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open")
            .write_all(text.as_bytes())
            .expect("write");
    }

    /// Renames `path` to `.1` (shifting the older ones), as the runner rotates.
    fn rotate(path: &Path, keep: u32) {
        let _ = std::fs::remove_file(rotated(path, keep));
        for n in (1..keep).rev() {
            let _ = std::fs::rename(rotated(path, n), rotated(path, n + 1));
        }
        std::fs::rename(path, rotated(path, 1)).expect("rotate");
    }

    fn numbered(from: usize, to: usize) -> String {
        (from..=to).map(|i| format!("line {i}\n")).collect()
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8(l.text.clone()).expect("utf-8"))
            .collect()
    }

    fn tail_text(path: &Path, lines: usize, budget: u64) -> String {
        String::from_utf8(tail(path, lines, budget).expect("tail")).expect("utf-8")
    }

    #[test]
    fn tail_reads_back_across_rotated_files_and_counts_an_unended_line() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stdout.log");
        assert_eq!(tail_text(&path, 10, 1 << 20), "", "no file: empty");
        // 3 000 lines of ~10 bytes: several blocks per file.
        append(&path, &numbered(1, 1000));
        rotate(&path, 2);
        append(&path, &numbered(1001, 2000));
        rotate(&path, 2);
        append(&path, &numbered(2001, 3000));
        assert_eq!(tail_text(&path, 3, 1 << 20), numbered(2998, 3000));
        assert_eq!(tail_text(&path, 1500, 1 << 20), numbered(1501, 3000));
        assert_eq!(tail_text(&path, 2500, 1 << 20), numbered(501, 3000));
        assert_eq!(tail_text(&path, 10_000, 1 << 20), numbered(1, 3000));
        assert_eq!(tail_text(&path, 0, 1 << 20), "");

        // A line the command is still writing counts, and may straddle a rotation.
        append(&path, "half of ");
        rotate(&path, 2);
        append(&path, "a line\nand more");
        assert_eq!(
            tail_text(&path, 3, 1 << 20),
            "line 3000\nhalf of a line\nand more"
        );
        // The oldest file is gone: the tail stops at what is left.
        assert_eq!(
            tail_text(&path, 10_000, 1 << 20)
                .lines()
                .next()
                .expect("a line"),
            "line 1001"
        );
    }

    #[test]
    fn tail_keeps_to_its_byte_budget_in_whole_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stderr.log");
        append(&path, &numbered(1, 100));
        // "line 91\n" … "line 99\n" are 8 bytes each, "line 100\n" 9: 30 bytes hold
        // "line 98\n" "line 99\n" "line 100\n" and part of "line 97".
        assert_eq!(tail_text(&path, 50, 30), numbered(98, 100));
        assert_eq!(tail_text(&path, 50, 25), numbered(98, 100));
        assert_eq!(tail_text(&path, 2, 30), numbered(99, 100));
        // One line longer than the budget: its end.
        let long = "x".repeat(100);
        append(&path, &format!("{long}\n"));
        assert_eq!(tail_text(&path, 5, 10), format!("{}\n", &long[..9]));
    }

    #[test]
    fn a_follower_starts_with_whole_lines_and_reads_on_through_rotations() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stdout.log");
        append(&path, &numbered(1, 5));
        rotate(&path, 5);
        append(&path, &numbered(6, 8));
        append(&path, "unended");
        let mut follower = Follower::from_tail(&path, 4).expect("follower");
        assert_eq!(
            texts(&follower.read(1 << 20).expect("read")),
            ["line 5", "line 6", "line 7", "line 8"]
        );
        assert!(follower.read(1 << 20).expect("read").is_empty());

        append(&path, " now\nline 9\n");
        assert_eq!(
            texts(&follower.read(1 << 20).expect("read")),
            ["unended now", "line 9"]
        );
        // A rotation: the old file's last lines first, then the new file's.
        append(&path, "line 10\n");
        rotate(&path, 5);
        append(&path, "line 11\n");
        assert_eq!(
            texts(&follower.read(1 << 20).expect("read")),
            ["line 10", "line 11"]
        );
        // Two rotations between reads: the file in between is read too.
        append(&path, "line 12\n");
        rotate(&path, 5);
        append(&path, "line 13\n");
        rotate(&path, 5);
        append(&path, "line 14\npart");
        assert_eq!(
            texts(&follower.read(1 << 20).expect("read")),
            ["line 12", "line 13", "line 14"]
        );
        let last = follower.finish().expect("the unended line");
        assert_eq!(last.text, b"part");
        assert!(follower.finish().is_none());
    }

    /// The runner's own writer, rotating every few lines: the follower gets every line
    /// once, in order, and the tail reads back over what the runner keeps.
    #[test]
    fn files_as_the_runner_writes_them_are_followed_and_tailed() {
        use crate::train::logfile::{attempt_header, RotatingLog};

        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(STDOUT_LOG);
        let mut follower = Follower::from_tail(&path, 10).expect("follower");
        let mut got = Vec::new();
        let mut log = RotatingLog::open(path.clone(), 40, 3).expect("open");
        log.write(attempt_header(1).as_bytes()).expect("write");
        for i in 1..=50 {
            // Lines written in two pieces: a rotation may fall between them.
            log.write(format!("line {i}").as_bytes()).expect("write");
            log.write(b"\n").expect("write");
            if i % 3 == 0 {
                got.extend(texts(&follower.read(1 << 20).expect("read")));
            }
        }
        got.extend(texts(&follower.read(1 << 20).expect("read")));
        let expected: Vec<String> = std::iter::once("==> attempt 1 <==".to_string())
            .chain((1..=50).map(|i| format!("line {i}")))
            .collect();
        assert_eq!(got, expected);
        assert!(rotated(&path, 3).exists() && !rotated(&path, 4).exists());
        assert_eq!(tail_text(&path, 2, 1 << 20), numbered(49, 50));
        let kept = tail_text(&path, 10_000, 1 << 20);
        assert!(kept.ends_with(&numbered(40, 50)), "{kept}");
    }

    #[test]
    fn a_follower_reads_a_file_emptied_in_place_from_its_start() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stdout.log");
        append(&path, "a long first line\n");
        let mut follower = Follower::from_tail(&path, 10).expect("follower");
        assert_eq!(
            texts(&follower.read(1 << 20).expect("read")),
            ["a long first line"]
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(0)
            .expect("empty");
        append(&path, "short\n");
        assert_eq!(texts(&follower.read(1 << 20).expect("read")), ["short"]);
    }

    #[test]
    fn a_follower_waits_for_the_first_file_and_takes_what_was_rotated_before_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stdout.log");
        let mut follower = Follower::from_tail(&path, 100).expect("follower");
        assert!(follower.read(1 << 20).expect("read").is_empty());
        append(&path, "first\n");
        rotate(&path, 2);
        append(&path, "second\n");
        assert_eq!(
            texts(&follower.read(1 << 20).expect("read")),
            ["first", "second"]
        );
    }

    #[test]
    fn a_follower_resumes_after_a_position_even_once_its_file_was_rotated() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stdout.log");
        append(&path, &numbered(1, 3));
        let mut follower = Follower::from_tail(&path, 10).expect("follower");
        let lines = follower.read(1 << 20).expect("read");
        let after_two = lines[1].end;
        assert_eq!(
            after_two.to_string().parse::<Position>(),
            Ok(after_two),
            "a position reads back from its text"
        );
        rotate(&path, 2);
        append(&path, "line 4\n");
        let mut resumed = Follower::resume(&path, after_two).expect("resumed");
        assert_eq!(
            texts(&resumed.read(1 << 20).expect("read")),
            ["line 3", "line 4"]
        );
        // Its file rotated out: everything left came after it.
        rotate(&path, 2);
        append(&path, "line 5\n");
        rotate(&path, 2);
        append(&path, "line 6\n");
        let mut resumed = Follower::resume(&path, after_two).expect("resumed");
        assert_eq!(
            texts(&resumed.read(1 << 20).expect("read")),
            ["line 4", "line 5", "line 6"]
        );
        assert!("1-2".parse::<Position>().is_err());
        assert!("a-b-c".parse::<Position>().is_err());
    }

    #[test]
    fn long_lines_come_in_bounded_pieces_and_reads_stop_near_their_limit() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stdout.log");
        // A multi-byte character across the cut point is not split.
        let long = format!("{}é{}", "a".repeat(MAX_LINE_BYTES - 1), "b".repeat(10));
        append(&path, &format!("{long}\nshort\n"));
        let mut follower = Follower::from_tail(&path, 10).expect("follower");
        let lines = texts(&follower.read(1 << 20).expect("read"));
        assert_eq!(
            lines.len(),
            3,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], "a".repeat(MAX_LINE_BYTES - 1));
        assert_eq!(lines[1], format!("é{}", "b".repeat(10)));
        assert_eq!(lines[2], "short");

        append(&path, &numbered(1, 20_000));
        let first = follower.read(1000).expect("read");
        let bytes: usize = first.iter().map(|l| l.text.len() + 1).sum();
        assert!(
            (1000..1000 + BLOCK).contains(&bytes),
            "{bytes} bytes for a limit of 1000"
        );
    }
}

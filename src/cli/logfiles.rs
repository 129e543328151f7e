//! Service output as it is on disk: `state-dir/logs/<service>.log` and the rotated
//! files before it, `<service>.log.1` (the newest) to `.log.N`, one line each
//! `<RFC 3339 time> <stdout|stderr|muster> <text>`.
//!
//! `muster logs` reads the last lines from here rather than from the supervisor, which
//! keeps only a short tail in memory (`logs.tail-lines`): it works with no supervisor
//! running and returns as many lines as asked, as far back as the rotated files go.
//!
//! Memory stays small whatever is asked: the files are scanned backwards to find where
//! the last N lines begin, then read forwards from there and merged by time, one line
//! per service in hand.
//!
//! A line the supervisor sends (the API's [`LogLine`], when following) becomes the same
//! [`Line`], so both print alike.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::api::model::LogLine;
use crate::config::ServiceName;
use crate::supervisor::logs::Stream;

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub service: String,
    /// RFC 3339 with milliseconds, in UTC, as muster writes it: fixed width, so these
    /// sort as the times they stand for.
    pub time: String,
    pub stream: String,
    pub text: String,
}

impl From<LogLine> for Line {
    fn from(line: LogLine) -> Self {
        // As the files name them.
        let stream = match line.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Muster => "muster",
        };
        Self {
            service: line.service,
            time: line.time,
            stream: stream.to_owned(),
            text: line.text,
        }
    }
}

/// Where a follow picks up in a service's log: the file (by inode) and the offset
/// within it. What is on disk before it is read from disk; what comes after, from the
/// supervisor. `None`: the service had no log file yet, so everything comes from the
/// supervisor.
pub type Position = Option<(u64, u64)>;

/// What reading found besides the lines.
#[derive(Debug, Default)]
pub struct Found {
    /// The services with a log on disk.
    pub services: Vec<String>,
    /// Services whose file at the follow's position had already been rotated away:
    /// their lines before it are not shown.
    pub lost: Vec<String>,
}

/// Calls `emit` with the last `want` lines of `only` (or of every service, merged by
/// time) in `logs_dir`, oldest first. A service in `positions` is read up to its
/// position only; the others to the end of their files as they are now.
pub fn last_lines(
    logs_dir: &Path,
    only: Option<&str>,
    want: usize,
    positions: &BTreeMap<String, Position>,
    mut emit: impl FnMut(Line),
) -> io::Result<Found> {
    let mut found = Found::default();
    let mut readers = Vec::new();
    let mut total = 0;
    for (service, files) in open_all(logs_dir, only, positions, &mut found)? {
        let (count, segments) = segments(files, want)?;
        total += count;
        readers.push(Reader::new(service, segments));
    }
    // Each service gave up to `want` lines; of them all, only the last `want` by time.
    let mut skip = total.saturating_sub(want);
    merge(readers, |line| {
        if skip > 0 {
            skip -= 1;
        } else {
            emit(line);
        }
    })?;
    Ok(found)
}

/// Which lines to show: by time (RFC 3339 strings as muster writes them, which sort as
/// the times they stand for) and by stream.
#[derive(Debug, Clone, Default)]
pub struct Select {
    pub since: Option<String>,
    pub until: Option<String>,
    pub stream: Option<String>,
}

impl Select {
    pub fn is_all(&self) -> bool {
        self.since.is_none() && self.until.is_none() && self.stream.is_none()
    }

    pub fn keeps(&self, line: &Line) -> bool {
        self.since.as_ref().is_none_or(|since| line.time >= *since)
            && self.until.as_ref().is_none_or(|until| line.time <= *until)
            && self
                .stream
                .as_ref()
                .is_none_or(|stream| line.stream == *stream)
    }
}

/// Calls `emit` with the lines of `only` (or of every service, merged by time) that
/// `select` keeps, oldest first, across the rotated files; only the last `want` of them
/// when given (held in memory: at most `want` lines).
pub fn selected_lines(
    logs_dir: &Path,
    only: Option<&str>,
    select: &Select,
    want: Option<usize>,
    positions: &BTreeMap<String, Position>,
    mut emit: impl FnMut(Line),
) -> io::Result<Found> {
    let mut found = Found::default();
    let mut readers = Vec::new();
    for (service, files) in open_all(logs_dir, only, positions, &mut found)? {
        // Every file whole, oldest first: times are only known by reading the lines.
        let mut segments: Vec<Segment> = files
            .into_iter()
            .map(|(file, _, end)| Segment {
                file,
                start: 0,
                end,
            })
            .collect();
        segments.reverse();
        readers.push(Reader::new(service, segments));
    }
    let mut kept = std::collections::VecDeque::new();
    merge(readers, |line| {
        if !select.keeps(&line) {
            return;
        }
        match want {
            None => emit(line),
            Some(0) => {}
            Some(want) => {
                if kept.len() == want {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        }
    })?;
    kept.into_iter().for_each(emit);
    Ok(found)
}

/// Merges the readers' lines by time, oldest first.
fn merge(readers: Vec<Reader>, mut emit: impl FnMut(Line)) -> io::Result<()> {
    let mut heads: Vec<(Reader, Option<Line>)> = Vec::new();
    for mut reader in readers {
        let first = reader.next_line()?;
        heads.push((reader, first));
    }
    loop {
        let earliest = heads
            .iter()
            .enumerate()
            .filter_map(|(index, (_, line))| line.as_ref().map(|line| (index, &line.time)))
            .min_by(|a, b| a.1.cmp(b.1))
            .map(|(index, _)| index);
        let Some(index) = earliest else {
            return Ok(());
        };
        let (reader, head) = &mut heads[index];
        let next = reader.next_line()?;
        if let Some(line) = std::mem::replace(head, next) {
            emit(line);
        }
    }
}

/// Each service's log files, opened, newest first, each with its inode and how much of
/// it to read (cut at the follow's position when there is one).
#[allow(clippy::type_complexity)]
fn open_all(
    logs_dir: &Path,
    only: Option<&str>,
    positions: &BTreeMap<String, Position>,
    found: &mut Found,
) -> io::Result<Vec<(String, Vec<(File, u64, u64)>)>> {
    let mut all = Vec::new();
    for (service, paths) in on_disk(logs_dir)? {
        if only.is_some_and(|only| !names(only, &service)) {
            continue;
        }
        found.services.push(service.clone());
        // Opened at once, newest first: a rotation while this reads renames the files,
        // and the open handles still read what they were.
        let mut files = Vec::new();
        for path in paths {
            match File::open(&path) {
                Ok(file) => {
                    let meta = file.metadata()?;
                    files.push((file, meta.ino(), meta.len()));
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!("{}: {error}", path.display()),
                    ));
                }
            }
        }
        let files = match positions.get(&service) {
            None => files,
            Some(None) => Vec::new(),
            Some(Some((inode, offset))) => {
                match files.iter().position(|(_, ino, _)| ino == inode) {
                    Some(index) => {
                        let mut files = files.split_off(index);
                        files[0].2 = (*offset).min(files[0].2);
                        files
                    }
                    None => {
                        found.lost.push(service.clone());
                        Vec::new()
                    }
                }
            }
        };
        all.push((service, files));
    }
    Ok(all)
}

/// Each service's log files in `logs_dir`, newest first (`x.log`, `x.log.1`, ...).
fn on_disk(logs_dir: &Path) -> io::Result<BTreeMap<String, Vec<std::path::PathBuf>>> {
    let mut services: BTreeMap<String, Vec<(u32, std::path::PathBuf)>> = BTreeMap::new();
    let entries = match std::fs::read_dir(logs_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some((service, number)) = name.to_str().and_then(parse_file_name) else {
            continue;
        };
        services
            .entry(service.to_owned())
            .or_default()
            .push((number, entry.path()));
    }
    Ok(services
        .into_iter()
        .map(|(service, mut files)| {
            files.sort();
            (service, files.into_iter().map(|(_, path)| path).collect())
        })
        .collect())
}

/// Whether `asked` names `service`: the service itself, or, for a service with
/// `replicas`, each of its instances (`web` names `web.0`).
pub fn names(asked: &str, service: &str) -> bool {
    asked == service
        || ServiceName::new(service)
            .ok()
            .and_then(|name| name.replica_of().map(|(set, _)| set == asked))
            .unwrap_or(false)
}

/// `web.log` is web's current file (0), `web.log.3` its third rotated one; an
/// instance's are `web.0.log` and `web.0.log.3`. The number after `.log` is the only
/// other reading.
fn parse_file_name(name: &str) -> Option<(&str, u32)> {
    let (service, number) = match name.strip_suffix(".log") {
        Some(service) => (service, 0),
        None => {
            let (rest, number) = name.rsplit_once('.')?;
            let number: u32 = number.parse().ok().filter(|&n| n > 0)?;
            (rest.strip_suffix(".log")?, number)
        }
    };
    ServiceName::new(service).ok()?;
    Some((service, number))
}

/// A stretch of one file to read.
#[derive(Debug)]
struct Segment {
    file: File,
    start: u64,
    end: u64,
}

/// Where the last `want` lines of `files` (newest first, each with its inode and how
/// much of it to read) begin: how many lines that is, and the stretches to read, oldest
/// first.
fn segments(files: Vec<(File, u64, u64)>, want: usize) -> io::Result<(usize, Vec<Segment>)> {
    let mut count = 0;
    let mut segments = Vec::new();
    for (mut file, _, end) in files {
        if count == want {
            break;
        }
        let (lines, start, end) = last_lines_start(&mut file, end, want - count)?;
        count += lines;
        if lines > 0 {
            segments.push(Segment { file, start, end });
        }
    }
    segments.reverse();
    Ok((count, segments))
}

const CHUNK: u64 = 64 * 1024;

/// In the first `end` bytes of `file`, up to the last complete line: how many lines
/// there are, up to `want`, and the offsets where the first of them begins and where
/// the last ends.
fn last_lines_start(file: &mut File, end: u64, want: usize) -> io::Result<(usize, u64, u64)> {
    let mut buffer = vec![0u8; CHUNK as usize];
    let mut position = end;
    // The end of the last complete line, once found (a line still being written is
    // left for the next reader).
    let mut last: Option<u64> = None;
    let mut count = 0;
    while position > 0 {
        let size = CHUNK.min(position);
        position -= size;
        let chunk = &mut buffer[..size as usize];
        file.seek(SeekFrom::Start(position))?;
        file.read_exact(chunk)?;
        for (index, &byte) in chunk.iter().enumerate().rev() {
            if byte != b'\n' {
                continue;
            }
            let at = position + index as u64;
            if last.is_none() {
                last = Some(at + 1);
                continue;
            }
            // A newline before the end: a line begins just after it.
            count += 1;
            if count == want {
                return Ok((count, at + 1, last.unwrap_or(end)));
            }
        }
    }
    match last {
        // The first line of the file begins at 0.
        Some(last) => Ok((count + 1, 0, last)),
        None => Ok((0, 0, 0)),
    }
}

/// Reads one service's segments forwards, line by line.
#[derive(Debug)]
struct Reader {
    service: String,
    segments: std::collections::VecDeque<Segment>,
    current: Option<BufReader<io::Take<File>>>,
    /// The time of the last line read: a line without one (not written by muster) is
    /// given it, to keep its place.
    time: String,
    buffer: Vec<u8>,
}

impl Reader {
    fn new(service: String, segments: Vec<Segment>) -> Self {
        Self {
            service,
            segments: segments.into(),
            current: None,
            time: String::new(),
            buffer: Vec::new(),
        }
    }

    fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            if let Some(reader) = &mut self.current {
                self.buffer.clear();
                if reader.read_until(b'\n', &mut self.buffer)? > 0 {
                    if self.buffer.last() == Some(&b'\n') {
                        self.buffer.pop();
                    }
                    let text = String::from_utf8_lossy(&self.buffer).into_owned();
                    return Ok(Some(self.parse(&text)));
                }
                self.current = None;
            }
            let Some(mut segment) = self.segments.pop_front() else {
                return Ok(None);
            };
            segment.file.seek(SeekFrom::Start(segment.start))?;
            let length = segment.end.saturating_sub(segment.start);
            self.current = Some(BufReader::with_capacity(
                CHUNK as usize,
                segment.file.take(length),
            ));
        }
    }

    /// `2026-01-02T03:04:05.678Z stdout some text`.
    fn parse(&mut self, raw: &str) -> Line {
        let parsed = raw.split_once(' ').and_then(|(time, rest)| {
            humantime::parse_rfc3339(time).ok()?;
            let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
            matches!(stream, "stdout" | "stderr" | "muster").then_some((time, stream, text))
        });
        match parsed {
            Some((time, stream, text)) => {
                time.clone_into(&mut self.time);
                Line {
                    service: self.service.clone(),
                    time: time.to_owned(),
                    stream: stream.to_owned(),
                    text: text.to_owned(),
                }
            }
            None => Line {
                service: self.service.clone(),
                time: self.time.clone(),
                stream: "stdout".to_owned(),
                text: raw.to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[(&str, &str)]) {
        let text: String = lines
            .iter()
            .map(|(time, text)| format!("2026-01-01T00:00:{time}Z stdout {text}\n"))
            .collect();
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn read(dir: &Path, only: Option<&str>, want: usize) -> Vec<String> {
        let mut out = Vec::new();
        last_lines(dir, only, want, &BTreeMap::new(), |line| {
            out.push(format!("{} {}", line.service, line.text));
        })
        .unwrap();
        out
    }

    #[test]
    fn the_last_lines_come_from_the_rotated_files_too() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.log.2",
            &[("01.000", "one"), ("02.000", "two")],
        );
        write(dir.path(), "a.log.1", &[("03.000", "three")]);
        write(
            dir.path(),
            "a.log",
            &[("04.000", "four"), ("05.000", "five")],
        );
        assert_eq!(
            read(dir.path(), None, 4),
            ["a two", "a three", "a four", "a five"]
        );
        assert_eq!(read(dir.path(), Some("a"), 100).len(), 5);
        assert_eq!(read(dir.path(), Some("a"), 0), Vec::<String>::new());
        assert_eq!(read(dir.path(), Some("b"), 10), Vec::<String>::new());
    }

    #[test]
    fn services_are_merged_by_time_and_only_the_last_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.log", &[("01.000", "a1"), ("03.000", "a3")]);
        write(dir.path(), "b.log", &[("02.000", "b2"), ("04.000", "b4")]);
        assert_eq!(read(dir.path(), None, 3), ["b b2", "a a3", "b b4"]);
    }

    #[test]
    fn a_line_still_being_written_and_long_files_are_handled() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..50_000 {
            text.push_str(&format!("2026-01-01T00:00:00.000Z stderr line {i}\n"));
        }
        text.push_str("2026-01-01T00:00:00.000Z stdout partial");
        std::fs::write(dir.path().join("big.log"), text).unwrap();
        let lines = read(dir.path(), None, 40_000);
        assert_eq!(lines.len(), 40_000);
        assert_eq!(lines[0], "big line 10000");
        assert_eq!(lines[39_999], "big line 49999");
    }

    #[test]
    fn file_names_name_services() {
        assert_eq!(parse_file_name("web.log"), Some(("web", 0)));
        assert_eq!(parse_file_name("web.log.12"), Some(("web", 12)));
        assert_eq!(parse_file_name("web.log.0"), None);
        assert_eq!(parse_file_name("Web.log"), None);
        assert_eq!(parse_file_name("web.txt"), None);
        assert_eq!(parse_file_name("web.2.log"), Some(("web.2", 0)));
        assert_eq!(parse_file_name("web.2.log.4"), Some(("web.2", 4)));
        assert!(names("web", "web.2") && names("web", "web") && !names("web", "webby.2"));
        assert!(!names("web", "web.x"));
    }

    #[test]
    fn a_position_cuts_the_file_it_names() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.log.1", &[("01.000", "one")]);
        write(
            dir.path(),
            "a.log",
            &[("02.000", "two"), ("03.000", "three")],
        );
        let current = std::fs::metadata(dir.path().join("a.log")).unwrap();
        let first_line = "2026-01-01T00:00:02.000Z stdout two\n".len() as u64;
        let positions = BTreeMap::from([("a".to_owned(), Some((current.ino(), first_line)))]);
        let mut out = Vec::new();
        last_lines(dir.path(), None, 10, &positions, |line| out.push(line.text)).unwrap();
        assert_eq!(out, ["one", "two"]);
    }
}

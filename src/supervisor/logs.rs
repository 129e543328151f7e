//! Service output: drained from the child's pipes line by line, written to
//! `state-dir/logs/<service>.log` (rotated by size) and kept as a bounded in-memory tail.
//!
//! Memory is bounded whatever a child writes: one read buffer per runtime thread (not
//! per service), a partial line capped at [`MAX_LINE`] bytes (a longer line, or output
//! with no newline at all, is cut into pieces), and a tail of at most `tail_lines` lines
//! of at most [`TAIL_LINE_MAX`] bytes each. Reading goes as fast as the disk takes the
//! writes; after each read the pump yields, so a flooding child takes its turn with
//! everyone else instead of holding the thread.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use tokio::net::unix::pipe;

use super::descriptors::KeptLog;
use crate::config::{LogSettings, ServiceName};

/// Longest line kept whole; longer ones are split.
pub const MAX_LINE: usize = 16 * 1024;
/// Longest line kept in the in-memory tail (the file has it all).
pub const TAIL_LINE_MAX: usize = 1024;
const READ_BUFFER: usize = 64 * 1024;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// muster's own notes: spawned, exited, killed.
    Muster,
}

impl Stream {
    fn label(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Muster => "muster",
        }
    }
}

/// One line of output.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub stream: Stream,
    pub text: String,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// One service's log: the file and the tail. Shared by its two pipe readers and its
/// actor behind a mutex that is never held across an `.await`.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    /// The file, kept open between writes while a place among the logs kept open was
    /// free when it was opened; otherwise opened for each write (a descriptor per idle
    /// service would count against the limit that the pipes need).
    file: Option<(File, KeptLog)>,
    size: u64,
    settings: LogSettings,
    tail: VecDeque<Line>,
    /// The last write error, reported once until a write succeeds again.
    failing: Option<String>,
    /// Live readers (`logs --follow`); made on first use, so a service nobody follows
    /// costs nothing.
    followers: Option<tokio::sync::broadcast::Sender<Line>>,
    /// The one channel `muster up` shows every service's output from, with this
    /// service's name: one channel for all services rather than one each (a channel
    /// holds its whole backlog, 80 KiB for 1,024 lines, which per service was most of
    /// a 10,000-service supervisor's memory).
    view: Option<(ServiceName, ViewSender)>,
}

/// A line with the service that printed it, as `muster up` shows it.
pub type Tagged = (ServiceName, Line);
/// The sending side of [`Tagged`] lines.
pub type ViewSender = tokio::sync::broadcast::Sender<Tagged>;

pub type SharedLog = Arc<Mutex<Log>>;

impl Log {
    pub fn new(path: PathBuf, settings: LogSettings) -> Self {
        Self {
            path,
            file: None,
            size: 0,
            settings,
            tail: VecDeque::new(),
            failing: None,
            followers: None,
            view: None,
        }
    }

    /// Sends every line of the service's own output (not muster's notes) from now on
    /// to `view`, as `name`'s.
    pub fn show_in(&mut self, name: ServiceName, view: ViewSender) {
        self.view = Some((name, view));
    }

    /// A receiver of every line appended from now on.
    pub fn follow(&mut self) -> tokio::sync::broadcast::Receiver<Line> {
        self.followers
            .get_or_insert_with(|| tokio::sync::broadcast::channel(1024).0)
            .subscribe()
    }

    pub fn shared(path: PathBuf, settings: LogSettings) -> SharedLog {
        Arc::new(Mutex::new(Self::new(path, settings)))
    }

    pub fn lock(log: &SharedLog) -> MutexGuard<'_, Log> {
        log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends lines of one stream: to the file in one write, and to the tail.
    pub fn append<'a>(&mut self, stream: Stream, lines: impl IntoIterator<Item = &'a str>) {
        let time = SystemTime::now();
        let stamp = humantime::format_rfc3339_millis(time).to_string();
        let mut block = String::new();
        let followers = self
            .followers
            .as_ref()
            .filter(|f| f.receiver_count() > 0)
            .cloned();
        let view = self
            .view
            .as_ref()
            .filter(|(_, view)| stream != Stream::Muster && view.receiver_count() > 0);
        for text in lines {
            let _ = writeln!(block, "{stamp} {} {text}", stream.label());
            if followers.is_some() || view.is_some() {
                let line = Line {
                    time,
                    stream,
                    text: truncate(text, MAX_LINE).to_owned(),
                };
                if let Some((name, view)) = view {
                    let _ = view.send((name.clone(), line.clone()));
                }
                if let Some(followers) = &followers {
                    let _ = followers.send(line);
                }
            }
            if self.settings.tail_lines > 0 {
                if self.tail.len() == self.settings.tail_lines {
                    self.tail.pop_front();
                }
                self.tail.push_back(Line {
                    time,
                    stream,
                    text: truncate(text, TAIL_LINE_MAX).to_owned(),
                });
            }
        }
        if block.is_empty() {
            return;
        }
        match self.write(block.as_bytes()) {
            Ok(()) => self.failing = None,
            Err(error) => {
                let message = format!("cannot write {}: {error}", self.path.display());
                if self.failing.as_deref() != Some(message.as_str()) {
                    super::say::warn(format_args!("{message}; output is kept in memory only"));
                    self.failing = Some(message);
                }
            }
        }
    }

    pub fn note(&mut self, text: &str) {
        self.append(Stream::Muster, [text]);
    }

    /// The last `n` lines (all kept lines when `n` is larger).
    pub fn tail(&self, n: usize) -> Vec<Line> {
        let skip = self.tail.len().saturating_sub(n);
        self.tail.iter().skip(skip).cloned().collect()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + bytes.len() as u64 > self.settings.max_size {
            self.rotate()?;
        }
        if let Some((file, _)) = &mut self.file {
            file.write_all(bytes)?;
            self.size += bytes.len() as u64;
            return Ok(());
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        if let Some(kept) = KeptLog::take() {
            self.file = Some((file, kept));
        }
        Ok(())
    }

    /// `x.log` becomes `x.log.1`, `x.log.1` becomes `x.log.2`, ... up to `keep`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        self.size = 0;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.settings.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        for n in (1..self.settings.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))
    }
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Called with each complete line while it returns `true`.
pub type LineWatch = Box<dyn FnMut(&str) -> bool + Send>;

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`; calls `line` for each complete line (without its newline).
    pub fn feed(&mut self, mut bytes: &[u8], mut line: impl FnMut(&[u8])) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (head, rest) = (&bytes[..end], &bytes[end + 1..]);
            if head.is_empty() && self.partial.is_empty() {
                line(b"");
            } else if self.partial.is_empty() {
                for piece in head.chunks(MAX_LINE) {
                    line(piece);
                }
            } else {
                self.push(head, &mut line);
                line(&self.partial);
                self.partial.clear();
            }
            bytes = rest;
        }
        self.push(bytes, &mut line);
    }

    /// Keeps `bytes` as the start of a line, emitting full pieces of [`MAX_LINE`].
    fn push(&mut self, mut bytes: &[u8], line: &mut impl FnMut(&[u8])) {
        while self.partial.len() + bytes.len() > MAX_LINE {
            let take = MAX_LINE - self.partial.len();
            self.partial.extend_from_slice(&bytes[..take]);
            line(&self.partial);
            self.partial.clear();
            bytes = &bytes[take..];
        }
        self.partial.extend_from_slice(bytes);
    }

    /// The unterminated rest, at end of stream.
    pub fn finish(&mut self, mut line: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            line(&self.partial);
            self.partial.clear();
        }
    }
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUFFER]);
}

/// Drains a run's pipes (its stdout's and stderr's, or the one both share) into its log
/// until every write end closes. One task reads them all: a task per pipe would cost
/// each service a second task's memory for nothing.
pub async fn pump(pipes: Vec<(pipe::Receiver, Stream)>, log: SharedLog, watch: Option<LineWatch>) {
    let mut watch = watch;
    let mut deliver = |stream: Stream, splitter: &mut LineSplitter, bytes: Option<&[u8]>| {
        let mut lines: Vec<String> = Vec::new();
        let mut collect = |raw: &[u8]| lines.push(String::from_utf8_lossy(raw).into_owned());
        match bytes {
            Some(bytes) => splitter.feed(bytes, &mut collect),
            None => splitter.finish(&mut collect),
        }
        if let Some(check) = watch.as_mut()
            && !lines.iter().all(|line| check(line))
        {
            watch = None;
        }
        Log::lock(&log).append(stream, lines.iter().map(String::as_str));
    };
    let mut open: Vec<(pipe::Receiver, Stream, LineSplitter)> = pipes
        .into_iter()
        .map(|(pipe, stream)| (pipe, stream, LineSplitter::default()))
        .collect();
    // When both pipes have something, the one not read last goes first: stdout at the
    // start (a program that wrote its stdout, then its stderr, is read in that order),
    // then turn about, so that a flood on one does not hold the other's lines back.
    let mut prefer = 0;
    loop {
        // Which pipe has something (or its end) to read.
        let ready = match open.as_slice() {
            [] => break,
            [only] => only.0.readable().await.map(|()| 0),
            [first, second, ..] => {
                let (one, other) = if prefer == 0 {
                    ((first, 0), (second, 1))
                } else {
                    ((second, 1), (first, 0))
                };
                tokio::select! {
                    biased;
                    ready = one.0.0.readable() => ready.map(|()| one.1),
                    ready = other.0.0.readable() => ready.map(|()| other.1),
                }
            }
        };
        let index = match ready {
            Ok(index) => index,
            // The reactor is gone: the runtime is shutting down.
            Err(_) => break,
        };
        prefer = 1 - index.min(1);
        let Some((pipe, stream, splitter)) = open.get_mut(index) else {
            break;
        };
        let stream = *stream;
        let read = READ_BUF.with_borrow_mut(|buf| match pipe.try_read(buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                deliver(stream, splitter, Some(&buf[..n]));
                Ok(true)
            }
            Err(error) => Err(error),
        });
        match read {
            // tokio's budget counts reads, not bytes: a child that always has 64 KiB
            // ready would keep the thread for 128 of them. Yield after each one.
            Ok(true) => tokio::task::yield_now().await,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            // The end of this pipe, or an error reading it: what it held is kept.
            Ok(false) | Err(_) => {
                let (_, stream, mut splitter) = open.swap_remove(index);
                deliver(stream, &mut splitter, None);
            }
        }
    }
    for (_, stream, mut splitter) in open {
        deliver(stream, &mut splitter, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, |l| lines.push(l.to_vec()));
        }
        splitter.finish(|l| lines.push(l.to_vec()));
        lines
    }

    #[test]
    fn lines_are_joined_across_reads_and_the_rest_is_kept_at_the_end() {
        let lines = split(&[b"one\ntw", b"o\n", b"three"]);
        assert_eq!(lines, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    }

    #[test]
    fn a_line_without_newline_is_cut_at_the_limit() {
        let big = vec![b'x'; MAX_LINE * 2 + 10];
        let lines = split(&[&big[..100], &big[100..]]);
        assert_eq!(
            lines.iter().map(Vec::len).collect::<Vec<_>>(),
            [MAX_LINE, MAX_LINE, 10]
        );
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_the_tail_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let settings = LogSettings {
            max_size: 1000,
            keep: 2,
            tail_lines: 5,
        };
        let mut log = Log::new(path.clone(), settings);
        let text = "y".repeat(100);
        for _ in 0..50 {
            log.append(Stream::Stdout, [text.as_str()]);
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
        assert!(dir.path().join("svc.log.1").exists());
        assert!(dir.path().join("svc.log.2").exists());
        assert!(!dir.path().join("svc.log.3").exists());
        assert_eq!(log.tail(100).len(), 5);
        assert_eq!(log.tail(2).len(), 2);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}

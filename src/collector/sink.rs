//! Where collected records go: JSON lines under the data folder (`serve --data-dir`), laid
//! out as Azure lays out its blobs, `ENDPOINT/DEPLOYMENT/COLLECTION/YYYY/MM/DD/HH/...`, and
//! written by one thread of their own, never by a request.
//!
//! **Off the request path.** A request hands its record to a bounded lock-free queue, which
//! the writer drains every [`DRAIN_EVERY`]: the request never waits and never wakes it; when
//! the writer falls behind, the record is dropped and counted.
//! A failing disk (full, unwritable folder) costs the writer, not the requests: the error is
//! counted, kept for `show` and logged (at most once a minute), and the records are dropped.
//!
//! **Files.** A file per collection and rolling period (`minute`: `HH/MM.jsonl`; `hour`:
//! `HH/data.jsonl`; `day`: `DD/data.jsonl`), split at [`MAX_FILE_BYTES`] (`data.1.jsonl`, ...).
//! Lines are flushed after each drain, so a record is on disk within about [`DRAIN_EVERY`] of
//! its request, and [`Sink::flush`] (SIGTERM) waits for the rest.
//!
//! **Bounded.** The folder holds at most `max_bytes` of records: past it, the oldest files go
//! first, counted and logged.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

use crossbeam_queue::ArrayQueue;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::record::Record;
use crate::spec::RollingRate;

/// Records waiting for the writer at most.
const QUEUE: usize = 8_192;
/// Bytes of bodies waiting for the writer at most (a count alone would let 8192 large bodies
/// be held at once).
const QUEUE_BYTES: u64 = 64 << 20;
/// How often the writer takes what is queued. Requests never wake it (a wake-up per record
/// is a system call on the request's thread and a context switch): it looks this often, so a
/// record is on disk within about this long, and [`Sink::flush`] wakes it at once.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// A file is split past this size (so the newest records of a busy hour can be read back
/// without reading the hour).
pub(crate) const MAX_FILE_BYTES: u64 = 32 << 20;
/// At most one log line per this long about a failing disk.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Counts of one deployment version's records.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub written: AtomicU64,
    /// Dropped because the writer was behind (the queue full).
    pub dropped: AtomicU64,
    /// Dropped because the disk refused them.
    pub failed: AtomicU64,
}

/// A record and where its counts go.
struct Item {
    record: Record,
    rolling: RollingRate,
    counts: Arc<Counts>,
}

/// The last disk error, for `show`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SinkError {
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

/// The data folder's writer.
pub(crate) struct Sink {
    dir: PathBuf,
    max_bytes: u64,
    /// Records handed over and not yet taken by the writer (lock-free; full: dropped).
    queue: ArrayQueue<Item>,
    /// Body bytes in `queue`.
    queued_bytes: AtomicU64,
    /// The writer thread, started by the first record.
    writer: OnceLock<std::thread::Thread>,
    /// Flushes asked for: answered once what was queued before them is on disk.
    flushes: Mutex<Vec<SyncSender<()>>>,
    last_error: Mutex<Option<SinkError>>,
    /// Files removed to stay under `max_bytes`.
    removed_files: AtomicU64,
}

impl Sink {
    /// A sink writing under `dir` (made when the first record comes), keeping at most
    /// `max_bytes` there.
    pub(crate) fn new(dir: PathBuf, max_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            dir,
            max_bytes,
            queue: ArrayQueue::new(QUEUE),
            queued_bytes: AtomicU64::new(0),
            writer: OnceLock::new(),
            flushes: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            removed_files: AtomicU64::new(0),
        })
    }

    /// The data folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last disk error, if any.
    pub(crate) fn last_error(&self) -> Option<SinkError> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Files removed so far to stay under the size cap.
    pub(crate) fn removed_files(&self) -> u64 {
        self.removed_files.load(Ordering::Relaxed)
    }

    /// Hands a record to the writer; never blocks, never wakes it. Dropped (and counted) when
    /// the writer is behind.
    pub(crate) fn push(self: &Arc<Self>, record: Record, rolling: RollingRate, counts: &Arc<Counts>) {
        self.start();
        let bytes = record.body.len() as u64;
        if self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.queue.push(Item { record, rolling, counts: Arc::clone(counts) }).is_err() {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every record handed over so far is written and flushed, up to `limit`
    /// (SIGTERM: nothing acknowledged is lost). True when it was.
    pub(crate) fn flush(&self, limit: Duration) -> bool {
        let Some(writer) = self.writer.get() else { return true };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.flushes.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        writer.unpark();
        rx.recv_timeout(limit).is_ok()
    }

    fn start(self: &Arc<Self>) {
        if self.writer.get().is_some() {
            return;
        }
        let sink = Arc::clone(self);
        // Only the first caller's thread is kept; a racing second one finds the slot taken
        // and its thread ends at once.
        let spawned = std::thread::Builder::new().name("switchyard-collect".into()).spawn(move || {
            crate::threads::set_nice(crate::threads::COLLECTOR_NICE);
            let me = std::thread::current();
            if sink.writer.set(me).is_ok() {
                Writer::new(sink).run();
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the data collector's writer thread could not start: records are dropped");
            return;
        }
        // The first record waits for the thread to register (once per process).
        while self.writer.get().is_none() {
            std::thread::yield_now();
        }
    }

    fn failed(&self, message: String, last_warned: &mut Option<Instant>) {
        if last_warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last_warned = Some(Instant::now());
            tracing::warn!(target: "switchyard::collector", dir = %self.dir.display(), "{message}");
        }
        let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(SinkError { message, at });
    }
}

/// Where records go: endpoint, deployment, collection.
type Stream = (Arc<str>, Arc<str>, std::borrow::Cow<'static, str>);

/// A stream's file of the current period.
struct OpenFile {
    /// The rolling period it is of ([`period_number`]).
    period: u64,
    /// Its split index within the period (`data.jsonl` is 0, `data.1.jsonl` is 1...).
    index: u32,
    path: PathBuf,
    writer: std::io::BufWriter<File>,
    size: u64,
}

/// The writer thread's state.
struct Writer {
    sink: Arc<Sink>,
    /// The open file of each stream (endpoint, deployment, collection).
    open: HashMap<Stream, OpenFile>,
    /// Bytes under the folder (counted at start, then as written).
    total: u64,
    /// The line being written (kept: one allocation for every record).
    line: Vec<u8>,
    /// Whether the data folder may be written (checked when the writer starts).
    root_ok: Result<(), String>,
    /// The folder's total at which the next prune is tried (after one that could not reach
    /// its goal, not before the total grew by a tenth of the cap).
    prune_at: u64,
    last_warned: Option<Instant>,
}

impl Writer {
    fn new(sink: Arc<Sink>) -> Self {
        let root_ok = check_root(&sink.dir);
        let total = folder_bytes(&sink.dir);
        let prune_at = sink.max_bytes;
        Self { sink, open: HashMap::new(), total, line: Vec::with_capacity(4096), root_ok, prune_at, last_warned: None }
    }

    fn run(mut self) {
        let mut idle = Duration::ZERO;
        loop {
            // Flushes asked for before this drain are answered after it.
            let acks = std::mem::take(&mut *self.sink.flushes.lock().unwrap_or_else(|e| e.into_inner()));
            let mut wrote = false;
            while let Some(item) = self.sink.queue.pop() {
                self.sink.queued_bytes.fetch_sub(item.record.body.len() as u64, Ordering::Relaxed);
                let counts = Arc::clone(&item.counts);
                // A record that made the writer panic is lost, counted and reported; the
                // writer goes on (a dead writer would stop every deployment's collection).
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write(item)));
                if written.is_err() {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    self.open.clear();
                    self.sink.failed(
                        "a record could not be written (the writer failed on it)".into(),
                        &mut self.last_warned,
                    );
                }
                wrote = true;
            }
            if self.line.capacity() > 1 << 20 {
                self.line = Vec::with_capacity(4096); // do not keep one huge record's buffer
            }
            if wrote || !acks.is_empty() {
                self.flush();
                idle = Duration::ZERO;
            } else {
                idle += DRAIN_EVERY;
                if idle >= Duration::from_secs(5) && !self.open.is_empty() {
                    // Idle: close the files, so a rolled file is not held open.
                    self.open.clear();
                }
            }
            for ack in acks {
                let _ = ack.send(());
            }
            std::thread::park_timeout(DRAIN_EVERY);
        }
    }

    fn flush(&mut self) {
        let mut failed = None;
        for f in self.open.values_mut() {
            if let Err(e) = f.writer.flush() {
                failed = Some(format!("cannot write collected records to {}: {e}", f.path.display()));
            }
        }
        if let Some(message) = failed {
            self.open.clear();
            self.sink.failed(message, &mut self.last_warned);
        }
    }

    fn write(&mut self, item: Item) {
        let Item { record, rolling, counts } = item;
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        record.write_line(&mut line);
        line.push(b'\n');
        let appended = self.append(&record, rolling, &line);
        self.line = line;
        match appended {
            Ok(()) => {
                counts.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(message) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                self.sink.failed(message, &mut self.last_warned);
            }
        }
    }

    fn append(&mut self, record: &Record, rolling: RollingRate, line: &[u8]) -> Result<(), String> {
        let stream = (Arc::clone(&record.endpoint), Arc::clone(&record.deployment), record.collection.clone());
        let period = period_number(record.time, rolling);
        // The common case: the stream's file of this period is open and has room.
        let reuse = self
            .open
            .get(&stream)
            .is_some_and(|f| f.period == period && (f.size + line.len() as u64 <= MAX_FILE_BYTES || f.size == 0));
        if !reuse {
            let next_index = match self.open.remove(&stream) {
                Some(f) if f.period == period => f.index + 1,
                _ => 0,
            };
            let file = self.open_file(record, rolling, period, next_index, line.len() as u64)?;
            self.open.insert(stream.clone(), file);
        }
        let f = self.open.get_mut(&stream).expect("opened above");
        if let Err(e) = f.writer.write_all(line) {
            let path = f.path.display().to_string();
            self.open.remove(&stream);
            return Err(format!("cannot write collected records to {path}: {e}"));
        }
        f.size += line.len() as u64;
        self.account(line.len() as u64);
        Ok(())
    }

    /// Opens the file of a record's stream and period, from split `index` on: the first
    /// that has room for `need` more bytes (or is empty).
    fn open_file(
        &self,
        record: &Record,
        rolling: RollingRate,
        period: u64,
        mut index: u32,
        need: u64,
    ) -> Result<OpenFile, String> {
        let (dated, stem) = period_path(record.time, rolling);
        let folder =
            self.sink.dir.join(&*record.endpoint).join(&*record.deployment).join(&*record.collection).join(dated);
        loop {
            let name = if index == 0 { format!("{stem}.jsonl") } else { format!("{stem}.{index}.jsonl") };
            let path = folder.join(name);
            let size = std::fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size + need <= MAX_FILE_BYTES || size == 0 {
                if let Err(why) = &self.root_ok {
                    return Err(format!("cannot write collected records in {}: {why}", self.sink.dir.display()));
                }
                let file = open_append(&self.sink.dir, &folder, &path)
                    .map_err(|e| format!("cannot write collected records to {}: {e}", path.display()))?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                let writer = std::io::BufWriter::with_capacity(64 << 10, file);
                return Ok(OpenFile { period, index, path, writer, size });
            }
            index += 1;
        }
    }

    /// Adds `n` bytes to the folder's total; past the cap, removes the oldest files.
    fn account(&mut self, n: u64) {
        self.total += n;
        if self.total <= self.prune_at.max(self.sink.max_bytes) {
            return;
        }
        // Sizes on disk from here: what the open files buffer goes there first.
        self.flush();
        let mut files = Vec::new();
        list_files(&self.sink.dir, 0, &mut files);
        files.sort_by_key(|(_, modified, _)| *modified);
        let goal = self.sink.max_bytes / 10 * 9;
        let mut left = files.iter().map(|f| f.2).sum::<u64>();
        let mut removed = 0;
        for (path, _, size) in &files {
            if left <= goal {
                break;
            }
            self.open.retain(|_, f| f.path != *path);
            if std::fs::remove_file(path).is_ok() {
                left -= size;
                removed += 1;
            }
        }
        self.total = left;
        // Could not get under the goal (files that cannot be removed): not again before the
        // total grows by another tenth of the cap.
        self.prune_at = if left > goal { left + self.sink.max_bytes / 10 } else { self.sink.max_bytes };
        if removed > 0 {
            self.sink.removed_files.fetch_add(removed, Ordering::Relaxed);
            tracing::warn!(
                target: "switchyard::collector",
                dir = %self.sink.dir.display(),
                removed,
                "the data folder passed its size cap: removed the oldest {removed} file(s)"
            );
        }
    }
}

/// The number of a record's rolling period (minutes, hours or days since the epoch): what
/// tells the writer, without formatting a date, that a stream's file rolls.
fn period_number(time: SystemTime, rolling: RollingRate) -> u64 {
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    secs / match rolling {
        RollingRate::Minute => 60,
        RollingRate::Hour => 3600,
        RollingRate::Day => 86_400,
    }
}

/// The folder and file stem of a record's rolling period, in UTC: `2026/12/07/01` and `data`
/// (hour), `2026/12/07/01` and `05` (minute), `2026/12/07` and `data` (day).
fn period_path(time: SystemTime, rolling: RollingRate) -> (PathBuf, String) {
    let t = humantime::format_rfc3339_seconds(time).to_string();
    // 2026-12-07T01:05:09Z
    let (y, mo, d, h, mi) = (&t[0..4], &t[5..7], &t[8..10], &t[11..13], &t[14..16]);
    match rolling {
        RollingRate::Day => ([y, mo, d].iter().collect(), "data".into()),
        RollingRate::Hour => ([y, mo, d, h].iter().collect(), "data".into()),
        RollingRate::Minute => ([y, mo, d, h].iter().collect(), mi.to_string()),
    }
}

/// Opens `path` for appending (made 0600 in folders made 0700) under the data folder `root`:
/// refused when the folder resolves outside `root` (a link planted on the way), when the file
/// is a link, or when it is not a regular file (a FIFO would block the writer for ever: it is
/// opened without waiting, and checked).
fn open_append(root: &Path, folder: &Path, path: &Path) -> std::io::Result<File> {
    let real_root = std::fs::canonicalize(root)?;
    let inside = |p: &Path| -> std::io::Result<()> {
        if std::fs::canonicalize(p)?.starts_with(&real_root) {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("{} leads outside the data folder (a link?)", folder.display())))
        }
    };
    // Before making folders: the deepest one that exists must be inside (making them through
    // a planted link would make them elsewhere).
    let existing = folder.ancestors().find(|a| a.exists()).unwrap_or(root);
    inside(existing)?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(folder)?;
    inside(folder)?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Whether the data folder may be written: made by this user, or owned by it and writable by
/// no one else (a folder another user made at a shared path could read every record, or plant
/// links in it).
fn check_root(root: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
        Ok(m) if !m.is_dir() => Err("it is not a folder".into()),
        Ok(m) if m.uid() != crate::sys::effective_uid() => {
            Err(format!("it belongs to user {}, not to this server's", m.uid()))
        }
        Ok(m) if m.mode() & 0o022 != 0 => Err(format!("others may write in it (mode {:o})", m.mode() & 0o777)),
        Ok(_) => Ok(()),
    }
}

/// Bytes of the `.jsonl` files under `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    let mut files = Vec::new();
    list_files(dir, 0, &mut files);
    files.iter().map(|f| f.2).sum()
}

/// The record files under `dir` (links not followed), with their modification time and
/// size: only files the writer's layout names (`YYYY/MM/DD[/HH]/{data,MM}[.N].jsonl` three
/// levels below an endpoint's folder), so the size cap never counts or removes a file of
/// anyone else's that happens to be there.
fn list_files(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, SystemTime, u64)>) {
    list_under(dir, dir, depth, out);
}

fn list_under(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(PathBuf, SystemTime, u64)>) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        if meta.is_dir() {
            list_under(root, &entry.path(), depth + 1, out);
        } else if meta.is_file() && is_record_file(entry.path().strip_prefix(root).unwrap_or(&entry.path())) {
            out.push((entry.path(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len()));
        }
    }
}

/// Whether `rel` (a path below a folder holding `YYYY/...` dated folders, or endpoints
/// above them) ends as the writer names files: `YYYY/MM/DD/{data,MM}[.N].jsonl` or
/// `YYYY/MM/DD/HH/{data,MM}[.N].jsonl`.
fn is_record_file(rel: &Path) -> bool {
    let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let Some(name) = parts.last().and_then(|n| n.strip_suffix(".jsonl")) else { return false };
    let stem =
        name.split_once('.')
            .map_or(name, |(stem, index)| if digits(index, index.len()) && !index.is_empty() { stem } else { "" });
    if stem != "data" && !digits(stem, 2) {
        return false;
    }
    let folders = &parts[..parts.len() - 1];
    let dated = |tail: &[&str]| {
        matches!(tail, [y, m, d] if digits(y, 4) && digits(m, 2) && digits(d, 2))
            || matches!(tail, [y, m, d, h] if digits(y, 4) && digits(m, 2) && digits(d, 2) && digits(h, 2))
    };
    (folders.len() >= 4 && dated(&folders[folders.len() - 4..]))
        || (folders.len() >= 3 && dated(&folders[folders.len() - 3..]))
}

/// The record files of one deployment (or one of its collections), by rolling period, newest
/// period first; a period's files from every collection, each collection's split files in
/// order.
pub(crate) fn files_by_period(
    dir: &Path,
    endpoint: &str,
    deployment: &str,
    collection: Option<&str>,
) -> Vec<Vec<PathBuf>> {
    let base = dir.join(endpoint).join(deployment);
    let collections: Vec<PathBuf> = match collection {
        Some(c) => vec![base.join(c)],
        None => std::fs::read_dir(&base)
            .map(|e| e.flatten().map(|e| e.path()).filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_dir())).collect())
            .unwrap_or_default(),
    };
    // (period folder below the collection, stem) → files; the period is the same text in
    // every collection, so one key gathers them.
    let mut periods: std::collections::BTreeMap<(PathBuf, String), Vec<(u64, PathBuf)>> = Default::default();
    for c in collections {
        let mut found = Vec::new();
        list_files(&c, 0, &mut found);
        for (path, _, _) in found {
            let (folder, stem, index) = sort_key(path.strip_prefix(&c).unwrap_or(&path));
            periods.entry((folder, stem)).or_default().push((index, path));
        }
    }
    periods
        .into_iter()
        .rev()
        .map(|(_, mut files)| {
            files.sort();
            files.into_iter().map(|(_, p)| p).collect()
        })
        .collect()
}

fn sort_key(p: &Path) -> (PathBuf, String, u64) {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let stem = name.trim_end_matches(".jsonl");
    let (stem, index) = match stem.rsplit_once('.') {
        Some((s, i)) => (s, i.parse().unwrap_or(0)),
        None => (stem, 0),
    };
    (p.parent().map(Path::to_path_buf).unwrap_or_default(), stem.to_string(), index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::record::{Kind, Role};
    use bytes::Bytes;

    fn record(at: SystemTime, collection: &'static str, body: &str) -> Record {
        Record {
            endpoint: "ep".into(),
            deployment: "blue".into(),
            collection: collection.into(),
            id: None,
            time: at,
            request_id: Some("r".into()),
            correlation_id: Some("r".into()),
            model_version: None,
            content_type: Some("application/json".into()),
            headers: Vec::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            kind: Kind::Payload { role: Role::Live, path: "/score".into(), method: "POST".into(), status: 200 },
        }
    }

    #[test]
    fn records_roll_by_period_and_read_back_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::new(dir.path().join("data"), 1 << 30);
        let counts = Arc::new(Counts::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
        sink.push(record(t0, "request", "[1]"), RollingRate::Minute, &counts);
        sink.push(record(t0 + Duration::from_secs(60), "request", "[2]"), RollingRate::Minute, &counts);
        sink.push(record(t0, "response", "[3]"), RollingRate::Hour, &counts);
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!(counts.written.load(Ordering::Relaxed), 3);
        let base = dir.path().join("data/ep/blue");
        assert!(base.join("request/2023/11/14/22/13.jsonl").is_file());
        assert!(base.join("request/2023/11/14/22/14.jsonl").is_file());
        assert!(base.join("response/2023/11/14/22/data.jsonl").is_file());
        let periods = files_by_period(&dir.path().join("data"), "ep", "blue", None);
        assert_eq!(periods.len(), 3, "minutes 13 and 14 of request, and the hour of response: {periods:?}");
        // One rolling rate per deployment in practice; here the hour's `data` stem sorts after
        // the minutes of the same hour.
        assert!(periods[0][0].ends_with("response/2023/11/14/22/data.jsonl"), "{periods:?}");
        let files: Vec<PathBuf> = files_by_period(&dir.path().join("data"), "ep", "blue", Some("request")).concat();
        assert!(files[0].ends_with("14.jsonl") && files[1].ends_with("13.jsonl"), "{files:?}");
        let mode = std::fs::metadata(&files[0]).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn an_unwritable_folder_is_reported_and_counted_never_raised() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the folder should be: every write fails, as on a full or read-only disk.
        std::fs::write(dir.path().join("data"), b"not a folder").unwrap();
        let sink = Sink::new(dir.path().join("data"), 1 << 30);
        let counts = Arc::new(Counts::default());
        sink.push(record(SystemTime::now(), "request", "[1]"), RollingRate::Hour, &counts);
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!((counts.written.load(Ordering::Relaxed), counts.failed.load(Ordering::Relaxed)), (0, 1));
        assert!(sink.last_error().unwrap().message.contains("cannot write collected records"));
    }

    #[test]
    fn past_the_cap_the_oldest_files_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::new(dir.path().to_path_buf(), 2_000);
        let counts = Arc::new(Counts::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let body = "x".repeat(300);
        for minute in 0..10 {
            sink.push(record(t0 + Duration::from_secs(60 * minute), "request", &body), RollingRate::Minute, &counts);
            assert!(sink.flush(Duration::from_secs(10)));
        }
        assert!(folder_bytes(dir.path()) <= 2_000, "{}", folder_bytes(dir.path()));
        assert!(sink.removed_files() > 0);
        let left = files_by_period(dir.path(), "ep", "blue", None).concat();
        assert!(left[0].ends_with("22.jsonl"), "the newest stays: {left:?}");
        assert!(!left.iter().any(|p| p.ends_with("13.jsonl")), "the oldest went: {left:?}");
    }

    #[test]
    fn a_record_the_writer_fails_on_is_counted_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::new(dir.path().join("data"), 1 << 30);
        let counts = Arc::new(Counts::default());
        // Year 300,000: no four-digit date can name it (formatting it panics).
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000 * 31_557_600);
        sink.push(record(far, "request", "[1]"), RollingRate::Hour, &counts);
        sink.push(record(SystemTime::now(), "request", "[2]"), RollingRate::Hour, &counts);
        assert!(sink.flush(Duration::from_secs(10)), "the writer still answers");
        assert_eq!((counts.written.load(Ordering::Relaxed), counts.failed.load(Ordering::Relaxed)), (1, 1));
        sink.push(record(SystemTime::now(), "request", "[3]"), RollingRate::Hour, &counts);
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!(counts.written.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_folder_others_may_write_in_is_refused_and_a_fifo_or_a_link_never_written() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let sink = Sink::new(open.clone(), 1 << 30);
        let counts = Arc::new(Counts::default());
        sink.push(record(SystemTime::now(), "request", "[1]"), RollingRate::Hour, &counts);
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!(counts.failed.load(Ordering::Relaxed), 1);
        assert!(sink.last_error().unwrap().message.contains("others may write in it"), "{:?}", sink.last_error());

        // A FIFO where the next file goes: refused at once (the writer never blocks on it).
        let root = dir.path().join("data");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let folder = root.join("ep/blue/request/2023/11/14/22");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        let fifo = folder.join("data.jsonl");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let sink = Sink::new(root.clone(), 1 << 30);
        let counts = Arc::new(Counts::default());
        sink.push(record(t0, "request", "[1]"), RollingRate::Hour, &counts);
        assert!(sink.flush(Duration::from_secs(10)), "the writer did not block on the FIFO");
        assert_eq!(counts.failed.load(Ordering::Relaxed), 1);
        // A link on the way out of the folder: refused, nothing written outside.
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("ep/green")).unwrap();
        let mut r = record(t0, "request", "[2]");
        r.deployment = "green".into();
        sink.push(r, RollingRate::Hour, &counts);
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!(counts.failed.load(Ordering::Relaxed), 2);
        assert!(sink.last_error().unwrap().message.contains("outside the data folder"), "{:?}", sink.last_error());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn the_cap_leaves_files_that_are_not_records_alone() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("datasets");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("train.jsonl"), vec![b'x'; 5_000]).unwrap();
        let sink = Sink::new(dir.path().to_path_buf(), 2_000);
        let counts = Arc::new(Counts::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for minute in 0..10 {
            sink.push(
                record(t0 + Duration::from_secs(60 * minute), "request", &"y".repeat(300)),
                RollingRate::Minute,
                &counts,
            );
            assert!(sink.flush(Duration::from_secs(10)));
        }
        assert_eq!(std::fs::metadata(theirs.join("train.jsonl")).unwrap().len(), 5_000, "not ours: kept");
        assert!(is_record_file(Path::new("ep/blue/request/2023/11/14/22/13.jsonl")));
        assert!(is_record_file(Path::new("ep/blue/request/2023/11/14/data.2.jsonl")));
        assert!(!is_record_file(Path::new("datasets/train.jsonl")));
        assert!(!is_record_file(Path::new("ep/blue/request/2023/11/14/22/notes.jsonl")));
    }

    #[test]
    fn the_queue_holds_at_most_its_byte_budget_of_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::new(dir.path().join("data"), 1 << 40);
        let counts = Arc::new(Counts::default());
        let mut big = record(SystemTime::now(), "request", "");
        big.body = Bytes::from(vec![b'x'; QUEUE_BYTES as usize + 1]);
        sink.push(big, RollingRate::Hour, &counts);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 1, "over the budget alone: dropped, never queued");
        assert_eq!(sink.queued_bytes.load(Ordering::Relaxed), 0);
        sink.push(record(SystemTime::now(), "request", "[1]"), RollingRate::Hour, &counts);
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!((counts.written.load(Ordering::Relaxed), sink.queued_bytes.load(Ordering::Relaxed)), (1, 0));
    }
}

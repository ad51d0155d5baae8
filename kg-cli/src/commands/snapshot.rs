//! `kg snapshot save`, `restore` and `status`: every live key at one revision, to a file of
//! JSON lines (`GET /api/snapshot` as it arrives) or stdout, back into a cluster from a file
//! or stdin, and what a file holds.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use indicatif::ProgressBar;
use kg_api::{
    Attach, Compare, CompareOp, CompareTarget, CompareValue, Endpoints, KeyRecord, Precondition,
    SnapshotEnd, SnapshotHeader, SnapshotLine, TxnOp, TxnRequest,
};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};

use crate::cli::{Output, SnapshotCommand};
use crate::output::{counted, emit, print_table, Render};
use crate::CliError;

/// The file name that means standard input or output, as everywhere else in kg.
const STDIO: &str = "-";

/// Runs `kg snapshot save|restore|status`.
pub async fn snapshot(
    endpoints: &Endpoints,
    command: SnapshotCommand,
    format: Output,
    out: &mut dyn Write,
    input: &mut dyn Read,
) -> Result<u8, CliError> {
    let progress = format == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    match command {
        SnapshotCommand::Save { file } if file.as_os_str() == STDIO => {
            // The snapshot is the output; what was saved goes to stderr, as a progress bar does.
            let saved = save_to(endpoints, out).await?;
            out.flush()?;
            emit(&mut io::stderr(), format, &saved)?;
        }
        SnapshotCommand::Save { file } => {
            emit(out, format, &save(endpoints, &file, progress).await?)?
        }
        SnapshotCommand::Restore {
            file,
            force,
            merge,
            concurrency,
        } => {
            let mode = match (force, merge) {
                (_, true) => Mode::Merge,
                (true, false) => Mode::Replace,
                (false, false) => Mode::IntoEmpty,
            };
            let concurrency = usize::from(concurrency);
            let source = Source::open(&file, input)?;
            let restored = restore(endpoints, &source, mode, concurrency, progress).await?;
            emit(out, format, &restored)?
        }
        SnapshotCommand::Status { file } => {
            let source = Source::open(&file, input)?;
            emit(out, format, &status(&source).await?)?
        }
    }
    Ok(0)
}

/// A snapshot file to read: its path, and what messages call it. Standard input is copied to
/// a temporary file first (a restore reads its file more than once), which messages call
/// "standard input", not by the temporary file's name.
pub struct Source {
    path: PathBuf,
    shown: String,
    /// Deletes the copy of standard input when the source is dropped.
    _spool: Option<tempfile::NamedTempFile>,
}

impl Source {
    /// `file`, or with `-` a copy of `input`.
    pub fn open(file: &Path, input: &mut dyn Read) -> Result<Self, CliError> {
        if file.as_os_str() != STDIO {
            return Ok(Self {
                path: file.to_owned(),
                shown: file.display().to_string(),
                _spool: None,
            });
        }
        let spool_error =
            |err: io::Error| CliError::File(format!("cannot copy standard input aside: {err}"));
        let mut spool = tempfile::NamedTempFile::new().map_err(spool_error)?;
        io::copy(input, &mut spool)
            .map_err(|err| CliError::File(format!("cannot read standard input: {err}")))?;
        spool.flush().map_err(spool_error)?;
        Ok(Self {
            path: spool.path().to_owned(),
            shown: "standard input".to_owned(),
            _spool: Some(spool),
        })
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("path", &self.path).finish()
    }
}

/// What `kg snapshot save` wrote.
#[derive(Debug, Serialize)]
pub struct Saved {
    pub file: PathBuf,
    pub revision: i64,
    pub keys: u64,
    pub bytes: u64,
}

impl Render for Saved {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "saved {} at revision {} to {} ({})",
            counted(self.keys, "key", "keys"),
            self.revision,
            if self.file.as_os_str() == STDIO {
                "standard output".to_owned()
            } else {
                self.file.display().to_string()
            },
            human_bytes(self.bytes)
        )
    }
}

/// Streams the snapshot into `FILE.part`, syncs it and renames it to `file` only once the
/// end line has arrived and checked out, so that `file` is never a snapshot cut short.
pub async fn save(endpoints: &Endpoints, file: &Path, progress: bool) -> Result<Saved, CliError> {
    // The rename replaces what is at `file`: only ever a regular file. A device, a pipe, a
    // link or a directory there is refused before the download (the rename would put a
    // regular file in place of /dev/full, say, or leave a link's target stale).
    if let Ok(meta) = tokio::fs::symlink_metadata(file).await {
        if !meta.file_type().is_file() {
            return Err(CliError::File(format!(
                "{} exists and is not a regular file; a snapshot replaces only a file (use `-` \
                 for standard output)",
                file.display()
            )));
        }
    }
    let mut stream = endpoints
        .call(|client| async move { client.snapshot().await })
        .await?;
    let header = stream.header.clone();
    let part = part_path(file);
    let written = async {
        let mut writer = BufWriter::new(tokio::fs::File::create(&part).await?);
        let bar = bar(progress, header.keys, "saving");
        writer.write_all(&line(&header)).await?;
        let mut keys = 0_u64;
        while let Some(record) = stream.next().await.map_err(CliError::from)? {
            writer.write_all(&line(&record)).await?;
            keys += 1;
            bar.inc(1);
        }
        writer.write_all(&line(&SnapshotEnd { end: keys })).await?;
        writer.flush().await?;
        let file = writer.into_inner();
        file.sync_all().await?;
        bar.finish_and_clear();
        Ok::<_, CliError>((keys, file.metadata().await?.len()))
    }
    .await;
    let (keys, bytes) = match written {
        Ok(done) => done,
        Err(err) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(match err {
                CliError::Output(io) => {
                    CliError::File(format!("cannot write {}: {io}", part.display()))
                }
                other => other,
            });
        }
    };
    tokio::fs::rename(&part, file).await.map_err(|err| {
        CliError::File(format!(
            "cannot rename {} to {}: {err}",
            part.display(),
            file.display()
        ))
    })?;
    Ok(Saved {
        file: file.to_owned(),
        revision: header.revision,
        keys,
        bytes,
    })
}

/// How a restore treats a cluster that already holds keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse it.
    IntoEmpty,
    /// Leave exactly the snapshot's keys (`--force`): keys the snapshot lacks are deleted.
    Replace,
    /// Write the snapshot's keys over it and keep the rest (`--merge`).
    Merge,
}

/// Streams the snapshot to `out` (`kg snapshot save -`), line by line as it arrives. A
/// snapshot cut short is an error after its lines were written: its reader sees no end line.
pub async fn save_to(endpoints: &Endpoints, out: &mut dyn Write) -> Result<Saved, CliError> {
    let mut stream = endpoints
        .call(|client| async move { client.snapshot().await })
        .await?;
    let header = stream.header.clone();
    let mut bytes = 0_u64;
    let mut write = |line: Vec<u8>| -> Result<(), CliError> {
        out.write_all(&line)?;
        bytes += line.len() as u64;
        Ok(())
    };
    write(self::line(&header))?;
    let mut keys = 0_u64;
    while let Some(record) = stream.next().await? {
        write(self::line(&record))?;
        keys += 1;
    }
    write(self::line(&SnapshotEnd { end: keys }))?;
    Ok(Saved {
        file: PathBuf::from(STDIO),
        revision: header.revision,
        keys,
        bytes,
    })
}

/// What `kg snapshot restore` loaded.
#[derive(Debug, Serialize)]
pub struct Restored {
    /// The file, or `-` for standard input.
    pub file: PathBuf,
    /// What the text calls the file.
    #[serde(skip)]
    pub from: String,
    /// The revision the snapshot was taken at.
    pub snapshot_revision: i64,
    pub keys: u64,
    /// Leases granted anew for the snapshot's leased keys, one per lease it named.
    pub leases: u64,
    /// Keys the cluster held that the snapshot lacks, deleted (with `--force`).
    pub deleted: u64,
    /// The cluster's revision after the last key was written or deleted.
    pub revision: i64,
}

impl Render for Restored {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "restored {} ({}) from {} (taken at revision {}); {}the cluster is at revision {}",
            counted(self.keys, "key", "keys"),
            counted(self.leases, "lease", "leases"),
            self.from,
            self.snapshot_revision,
            if self.deleted > 0 {
                format!(
                    "deleted {} the snapshot lacks; ",
                    counted(self.deleted, "key", "keys")
                )
            } else {
                String::new()
            },
            self.revision
        )
    }
}

/// Loads a snapshot file. The file is read twice: once to check that it is whole and well
/// formed (so that a damaged file writes nothing), then to write its keys, `concurrency` at
/// a time; with [`Mode::Replace`], a third time beside the cluster's keys, to delete those
/// it lacks. Each lease the snapshot names is granted anew for the time it had left.
pub async fn restore(
    endpoints: &Endpoints,
    file: &Source,
    mode: Mode,
    concurrency: usize,
    progress: bool,
) -> Result<Restored, CliError> {
    let checked = check_file(file).await?;
    let present = endpoints
        .call(|client| async move { client.count(None).await })
        .await?;
    if present > 0 && mode == Mode::IntoEmpty {
        return Err(CliError::Usage(format!(
            "the cluster holds {}: restore loads a snapshot into an empty one \
             (--force replaces what is there with the snapshot, --merge keeps the keys the \
             snapshot lacks)",
            counted(present, "key", "keys")
        )));
    }
    if let Some((key, value)) = &checked.largest {
        probe_value_limit(endpoints, file, key, value).await?;
    }
    let mut leases = BTreeMap::new();
    for (&old, &seconds) in &checked.leases {
        let grant = endpoints
            .call(|client| async move { client.lease_grant(seconds).await })
            .await?;
        leases.insert(old, grant.id);
    }
    let bar = bar(progress, checked.keys, "restoring");
    let leases = &leases;
    let bar_ref = &bar;
    // Each put is named for this run and its line, so that a put retried after an answer
    // that never came (a 503 from a node whose write committed later) is applied once.
    let run = format!("restore-{:016x}", fastrand::u64(..));
    let run = run.as_str();
    let revision = records(file)
        .await?
        .enumerate()
        .map(|(line, record)| record.map(|record| (line, record)))
        .map_ok(|(line, record)| async move {
            let attach = match record.lease {
                Some(old) => leases
                    .get(&old)
                    .map_or(Attach::None, |&new| Attach::Lease(new)),
                None => Attach::None,
            };
            let value = record.value.unwrap_or_default();
            let name = format!("{run}-{line}");
            let written = put_retrying(endpoints, &record.key, &value, attach, &name).await?;
            bar_ref.inc(1);
            Ok::<_, CliError>(written)
        })
        .try_buffer_unordered(concurrency.max(1))
        .try_fold(0_i64, |top, revision| async move { Ok(top.max(revision)) })
        .await?;
    bar.finish_and_clear();
    // Only now, once every key of the snapshot is in: a restore cut short leaves the cluster
    // holding more than the snapshot, never less than it and the old keys together.
    let (deleted, revision) = if mode == Mode::Replace && present > 0 {
        let (deleted, deleted_at) = delete_others(endpoints, file, concurrency).await?;
        (deleted, revision.max(deleted_at))
    } else {
        (0, revision)
    };
    Ok(Restored {
        file: match file._spool {
            Some(_) => PathBuf::from(STDIO),
            None => file.path.clone(),
        },
        from: file.to_string(),
        snapshot_revision: checked.header.revision,
        keys: checked.keys,
        leases: leases.len() as u64,
        deleted,
        revision,
    })
}

/// Deletes every key of the cluster that the snapshot lacks: the cluster's keys (a page at a
/// time) and the file's (a line at a time) are both in byte order, so one walk down both
/// finds them, holding no more than a page in memory. Returns how many it deleted and the
/// highest revision of those deletes.
async fn delete_others(
    endpoints: &Endpoints,
    file: &Source,
    concurrency: usize,
) -> Result<(u64, i64), CliError> {
    let mut snapshot_keys = std::pin::pin!(records(file).await?.map_ok(|record| record.key));
    let mut next_in_snapshot = snapshot_keys.try_next().await?;
    let mut after: Option<String> = None;
    let (mut deleted, mut revision) = (0_u64, 0_i64);
    loop {
        let page = endpoints
            .call(|client| {
                let after = after.clone();
                async move {
                    client
                        .list_keys_only(None, Some(kg_api::MAX_PAGE_SIZE), after.as_deref())
                        .await
                }
            })
            .await?;
        let mut others = Vec::new();
        for record in page.keys {
            while next_in_snapshot
                .as_deref()
                .is_some_and(|key| key.as_bytes() < record.key.as_bytes())
            {
                next_in_snapshot = snapshot_keys.try_next().await?;
            }
            if next_in_snapshot.as_deref() != Some(record.key.as_str()) {
                others.push(record.key);
            }
        }
        let done: Vec<Option<i64>> = futures::stream::iter(others)
            .map(|key| async move { delete_retrying(endpoints, &key).await })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        for at in done.into_iter().flatten() {
            deleted += 1;
            revision = revision.max(at);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((deleted, revision)),
        }
    }
}

/// A delete retried as [`put_retrying`] retries a put: `None` when the key was already gone
/// (its lease ran out, or someone else deleted it).
async fn delete_retrying(endpoints: &Endpoints, key: &str) -> Result<Option<i64>, CliError> {
    let mut wait = Duration::from_millis(100);
    for _ in 0..6 {
        let deleted = endpoints
            .call(|client| async move { client.delete(key, Precondition::None).await })
            .await;
        match deleted {
            Ok(deleted) => return Ok(Some(deleted.revision)),
            Err(kg_api::Error::NotFound { .. }) => return Ok(None),
            Err(err) if err.is_connect() || matches!(err, kg_api::Error::Unavailable { .. }) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(CliError::Unavailable(format!(
        "no node took the delete of {key:?}; the snapshot is restored, but keys it lacks \
         may be left"
    )))
}

/// A put that is retried while no node can take it (a node restarting, a failover). Every
/// attempt carries `name` as its Idempotency-Key: an attempt answered 503 may have committed
/// all the same, and the retry is then answered from it instead of writing the key again.
async fn put_retrying(
    endpoints: &Endpoints,
    key: &str,
    value: &str,
    attach: Attach,
    name: &str,
) -> Result<i64, CliError> {
    let mut wait = Duration::from_millis(100);
    for _ in 0..6 {
        let written = endpoints
            .call(|client| async move {
                client
                    .put_idempotent(key, value, Precondition::None, attach, Some(name))
                    .await
            })
            .await;
        match written {
            Ok(written) => return Ok(written.revision),
            Err(err) if err.is_connect() || matches!(err, kg_api::Error::Unavailable { .. }) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(CliError::Unavailable(format!(
        "no node took the write of {key:?}; the keys before it in the file may be restored"
    )))
}

/// A snapshot file that was read whole and checked.
struct Checked {
    header: SnapshotHeader,
    keys: u64,
    /// Every lease the keys name, with the whole seconds it had left (at least 1).
    leases: BTreeMap<i64, u64>,
    /// The key with the largest value, and that value: sent first as a transaction that
    /// cannot apply, so that a node whose value limit it passes refuses before any write.
    largest: Option<(String, String)>,
}

/// Reads the file through: a header of this format, key lines in strictly increasing byte
/// order (so no key twice), each with a value, and an end line that counts them.
async fn check_file(file: &Source) -> Result<Checked, CliError> {
    let mut lines = open(file).await?.lines();
    let bad = |why: String| CliError::Usage(format!("{file} is not a whole snapshot: {why}"));
    let first = next_line(&mut lines, file)
        .await?
        .ok_or_else(|| bad("it is empty".to_owned()))?;
    let header = SnapshotHeader::parse(first.as_bytes()).map_err(bad)?;
    let mut keys = 0_u64;
    let mut last: Option<String> = None;
    let mut leases = BTreeMap::new();
    let mut largest: Option<(String, String)> = None;
    loop {
        let Some(text) = next_line(&mut lines, file).await? else {
            return Err(bad(format!(
                "it ends after {keys} keys without an end line"
            )));
        };
        match SnapshotLine::parse(text.as_bytes())
            .map_err(|why| bad(format!("line {}: {why}", keys + 2)))?
        {
            SnapshotLine::End(SnapshotEnd { end }) if end == keys => break,
            SnapshotLine::End(SnapshotEnd { end }) => {
                return Err(bad(format!(
                    "its end line counts {end} keys, but it holds {keys}"
                )))
            }
            SnapshotLine::Key(record) => {
                if last
                    .as_deref()
                    .is_some_and(|last| last.as_bytes() >= record.key.as_bytes())
                {
                    return Err(bad(format!(
                        "line {}: key {:?} is out of order or repeated",
                        keys + 2,
                        record.key
                    )));
                }
                // The node's own rule, so that a key it would refuse stops the restore
                // before its first write, not in the middle.
                kg_api::check_key(&record.key)
                    .map_err(|why| bad(format!("line {}: {why}: {:?}", keys + 2, record.key)))?;
                let value = record.value.as_deref().unwrap_or_default();
                if largest
                    .as_ref()
                    .is_none_or(|(_, top)| value.len() > top.len())
                {
                    largest = Some((record.key.clone(), value.to_owned()));
                }
                if let Some(lease) = record.lease {
                    let seconds = lease_seconds(&record);
                    let entry = leases.entry(lease).or_insert(seconds);
                    *entry = (*entry).max(seconds);
                }
                keys += 1;
                last = Some(record.key);
            }
        }
    }
    if next_line(&mut lines, file).await?.is_some() {
        return Err(bad("it goes on after its end line".to_owned()));
    }
    Ok(Checked {
        header,
        keys,
        leases,
        largest,
    })
}

/// Sends the snapshot's largest value to the node as a put in a transaction whose compare
/// cannot hold (a version below 0): the node checks every branch's values before it runs
/// one, so a value over its limit is refused here, before the restore writes anything, and
/// one within it writes nothing.
async fn probe_value_limit(
    endpoints: &Endpoints,
    file: &Source,
    key: &str,
    value: &str,
) -> Result<(), CliError> {
    let probe = TxnRequest {
        compare: vec![Compare {
            key: key.to_owned(),
            target: CompareTarget::Version,
            op: CompareOp::Less,
            value: CompareValue::Integer(0),
        }],
        success: vec![TxnOp::Put {
            key: key.to_owned(),
            value: value.to_owned(),
            lease: None,
        }],
        failure: Vec::new(),
    };
    let probe = &probe;
    // Retried as the puts are: it writes nothing, so a retry is always safe.
    let mut wait = Duration::from_millis(100);
    let mut answer = endpoints
        .call(|client| async move { client.txn(probe, None).await })
        .await;
    for _ in 0..5 {
        match &answer {
            Err(err) if err.is_connect() || matches!(err, kg_api::Error::Unavailable { .. }) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            _ => break,
        }
        answer = endpoints
            .call(|client| async move { client.txn(probe, None).await })
            .await;
    }
    match answer {
        Ok(_) => Ok(()),
        Err(kg_api::Error::Api { status, detail }) if status.as_u16() == 413 => {
            Err(CliError::Usage(format!(
                "{file} cannot be restored to this node: its value of {key:?} ({} bytes) is \
                 over the node's limit ({detail}); nothing was written",
                value.len()
            )))
        }
        Err(err) => Err(err.into()),
    }
}

/// The whole seconds a leased key had left, rounded up and kept within the lease limits.
fn lease_seconds(record: &KeyRecord) -> u64 {
    let millis = u64::try_from(record.ttl_remaining_ms.unwrap_or(0)).unwrap_or(0);
    millis
        .div_ceil(1000)
        .clamp(kg_api::MIN_LEASE_TTL_SECONDS, kg_api::MAX_LEASE_TTL_SECONDS)
}

/// The key lines of a file that [`check_file`] has passed.
async fn records(
    file: &Source,
) -> Result<impl futures::Stream<Item = Result<KeyRecord, CliError>> + '_, CliError> {
    let mut lines = open(file).await?.lines();
    // The header, checked already.
    next_line(&mut lines, file).await?;
    Ok(futures::stream::try_unfold(
        lines,
        move |mut lines| async move {
            let Some(text) = next_line(&mut lines, file).await? else {
                return Ok(None);
            };
            match SnapshotLine::parse(text.as_bytes()) {
                Ok(SnapshotLine::Key(record)) => Ok(Some((record, lines))),
                Ok(SnapshotLine::End(_)) => Ok(None),
                Err(why) => Err(CliError::Usage(format!(
                    "{file} changed while it was restored: {why}"
                ))),
            }
        },
    ))
}

async fn open(file: &Source) -> Result<BufReader<tokio::fs::File>, CliError> {
    let opened = tokio::fs::File::open(&file.path)
        .await
        .map_err(|err| CliError::File(format!("cannot read {file}: {err}")))?;
    Ok(BufReader::new(opened))
}

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::fs::File>>,
    file: &Source,
) -> Result<Option<String>, CliError> {
    lines
        .next_line()
        .await
        .map_err(|err| CliError::File(format!("cannot read {file}: {err}")))
}

/// What `kg snapshot status` found in a file that it read whole and checked.
#[derive(Debug, Serialize)]
pub struct SnapshotStatus {
    /// The file, or `-` for standard input.
    pub file: PathBuf,
    /// The revision the snapshot shows the store at.
    pub revision: i64,
    /// When it was taken (RFC 3339, UTC).
    pub created_at: String,
    pub keys: u64,
    /// Leases its keys name.
    pub leases: u64,
    pub bytes: u64,
    /// The SHA-256 of the whole file, to compare copies.
    pub sha256: String,
}

impl Render for SnapshotStatus {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let rows = [
            ("revision", self.revision.to_string()),
            ("taken at", self.created_at.clone()),
            ("keys", self.keys.to_string()),
            ("leases", self.leases.to_string()),
            (
                "size",
                format!("{} ({} bytes)", human_bytes(self.bytes), self.bytes),
            ),
            ("sha256", self.sha256.clone()),
        ]
        .map(|(name, value)| vec![name.to_owned(), value]);
        print_table(out, &[], &rows)
    }
}

/// Checks a snapshot file through, as a restore does before it writes anything, and sums it.
pub async fn status(file: &Source) -> Result<SnapshotStatus, CliError> {
    use sha2::Digest as _;
    let checked = check_file(file).await?;
    let mut hasher = sha2::Sha256::new();
    let bytes = io::copy(
        &mut std::fs::File::open(&file.path)
            .map_err(|err| CliError::File(format!("cannot read {file}: {err}")))?,
        &mut hasher,
    )
    .map_err(|err| CliError::File(format!("cannot read {file}: {err}")))?;
    Ok(SnapshotStatus {
        file: match file._spool {
            Some(_) => PathBuf::from(STDIO),
            None => file.path.clone(),
        },
        revision: checked.header.revision,
        created_at: checked.header.created_at,
        keys: checked.keys,
        leases: checked.leases.len() as u64,
        bytes,
        sha256: format!("{:x}", hasher.finalize()),
    })
}

fn line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn part_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// A bar of `len` keys on stderr, shown only to a person watching.
fn bar(visible: bool, len: u64, verb: &str) -> ProgressBar {
    let bar = kg_bench::run::spinner(
        visible,
        "{spinner} {elapsed:>4} {prefix} [{bar:30}] {pos}/{len} keys ({per_sec}, {eta} left)",
    );
    bar.set_length(len);
    bar.set_prefix(verb.to_owned());
    bar
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

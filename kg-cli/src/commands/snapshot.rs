//! `kg snapshot save` and `kg snapshot restore`: every live key at one revision, to a file of
//! JSON lines (`GET /api/snapshot` as it arrives) and back into a cluster.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use indicatif::ProgressBar;
use kg_api::{
    Attach, Endpoints, KeyRecord, Precondition, SnapshotEnd, SnapshotHeader, SnapshotLine,
};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};

use crate::cli::{Output, SnapshotCommand};
use crate::output::{emit, Render};
use crate::CliError;

/// Runs `kg snapshot save|restore`.
pub async fn snapshot(
    endpoints: &Endpoints,
    command: SnapshotCommand,
    format: Output,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let progress = format == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    match command {
        SnapshotCommand::Save { file } => {
            emit(out, format, &save(endpoints, &file, progress).await?)?
        }
        SnapshotCommand::Restore {
            file,
            force,
            concurrency,
        } => emit(
            out,
            format,
            &restore(endpoints, &file, force, usize::from(concurrency), progress).await?,
        )?,
    }
    Ok(0)
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
            "saved {} keys at revision {} to {} ({})",
            self.keys,
            self.revision,
            self.file.display(),
            human_bytes(self.bytes)
        )
    }
}

/// Streams the snapshot into `FILE.part`, syncs it and renames it to `file` only once the
/// end line has arrived and checked out, so that `file` is never a snapshot cut short.
pub async fn save(endpoints: &Endpoints, file: &Path, progress: bool) -> Result<Saved, CliError> {
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
                CliError::Output(io) => CliError::Output(io::Error::new(
                    io.kind(),
                    format!("{}: {io}", part.display()),
                )),
                other => other,
            });
        }
    };
    tokio::fs::rename(&part, file).await.map_err(|err| {
        CliError::Output(io::Error::new(
            err.kind(),
            format!("renaming {} to {}: {err}", part.display(), file.display()),
        ))
    })?;
    Ok(Saved {
        file: file.to_owned(),
        revision: header.revision,
        keys,
        bytes,
    })
}

/// What `kg snapshot restore` loaded.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub file: PathBuf,
    /// The revision the snapshot was taken at.
    pub snapshot_revision: i64,
    pub keys: u64,
    /// Leases granted anew for the snapshot's leased keys, one per lease it named.
    pub leases: u64,
    /// The cluster's revision after the last key was written.
    pub revision: i64,
}

impl Render for Restored {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "restored {} keys ({} leases) from {} (taken at revision {}); the cluster is at revision {}",
            self.keys,
            self.leases,
            self.file.display(),
            self.snapshot_revision,
            self.revision
        )
    }
}

/// Loads a snapshot file. The file is read twice: once to check that it is whole and well
/// formed (so that a damaged file writes nothing), then to write its keys, `concurrency` at
/// a time. Each lease the snapshot names is granted anew for the time it had left.
pub async fn restore(
    endpoints: &Endpoints,
    file: &Path,
    force: bool,
    concurrency: usize,
    progress: bool,
) -> Result<Restored, CliError> {
    let checked = check_file(file).await?;
    let present = endpoints
        .call(|client| async move { client.count(None).await })
        .await?;
    if present > 0 && !force {
        return Err(CliError::Usage(format!(
            "the cluster holds {present} keys: restore loads a snapshot into an empty one \
             (--force writes the snapshot's keys over what is there)"
        )));
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
    Ok(Restored {
        file: file.to_owned(),
        snapshot_revision: checked.header.revision,
        keys: checked.keys,
        leases: leases.len() as u64,
        revision,
    })
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
}

/// Reads the file through: a header of this format, key lines in strictly increasing byte
/// order (so no key twice), each with a value, and an end line that counts them.
async fn check_file(file: &Path) -> Result<Checked, CliError> {
    let mut lines = open(file).await?.lines();
    let bad =
        |why: String| CliError::Usage(format!("{} is not a whole snapshot: {why}", file.display()));
    let first = next_line(&mut lines, file)
        .await?
        .ok_or_else(|| bad("it is empty".to_owned()))?;
    let header = SnapshotHeader::parse(first.as_bytes()).map_err(bad)?;
    let mut keys = 0_u64;
    let mut last: Option<String> = None;
    let mut leases = BTreeMap::new();
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
    })
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
    file: &Path,
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
                    "{} changed while it was restored: {why}",
                    file.display()
                ))),
            }
        },
    ))
}

async fn open(file: &Path) -> Result<BufReader<tokio::fs::File>, CliError> {
    let opened = tokio::fs::File::open(file)
        .await
        .map_err(|err| CliError::Usage(format!("cannot read {}: {err}", file.display())))?;
    Ok(BufReader::new(opened))
}

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::fs::File>>,
    file: &Path,
) -> Result<Option<String>, CliError> {
    lines
        .next_line()
        .await
        .map_err(|err| CliError::Usage(format!("cannot read {}: {err}", file.display())))
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

//! `kg lease` (grant, keepalive, revoke, list, show) and `kg lock`, etcdctl's lock: a key on a
//! kept-alive lease, taken in order of arrival by watching the key just before one's own.

use std::io::{self, Write};
use std::time::Duration;

use kg_api::{
    Attach, Endpoints, EventType, LeaseGrant, LeaseInfo, LeaseRevokeResponse, Precondition,
    WatchItem,
};
use serde::Serialize;

use crate::cli::{LeaseCommand, LockArgs, Output};
use crate::output::{counted, emit, print_table, Render};
use crate::CliError;

/// Exit code after ctrl-c, as shells report SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

/// A granted or kept-alive lease.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Granted(pub LeaseGrant);

impl Render for Granted {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "lease {} granted with TTL {}s", self.0.id, self.0.ttl)
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{}", self.0.id)
    }
}

/// A kept-alive lease: the same data, worded as a renewal.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct KeptAlive(pub LeaseGrant);

impl Render for KeptAlive {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "lease {} kept alive with TTL {}s",
            self.0.id, self.0.ttl
        )
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{}", self.0.ttl)
    }
}

#[derive(Debug, Serialize)]
pub struct Revoked {
    pub id: i64,
    #[serde(flatten)]
    pub response: LeaseRevokeResponse,
}

impl Render for Revoked {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "lease {} revoked: {} deleted (revision {})",
            self.id,
            counted(self.response.deleted, "key", "keys"),
            self.response.revision
        )
    }
}

/// The live leases: a table in text, the array in JSON.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Leases(pub Vec<LeaseInfo>);

impl Render for Leases {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|lease| {
                vec![
                    lease.id.to_string(),
                    format!("{}s", lease.ttl),
                    seconds_left(lease.remaining_ms),
                ]
            })
            .collect();
        print_table(out, &["ID", "TTL", "REMAINING"], &rows)
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        for lease in &self.0 {
            writeln!(out, "{}", lease.id)?;
        }
        Ok(())
    }
}

/// One lease with its keys.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Shown(pub LeaseInfo);

impl Render for Shown {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let lease = &self.0;
        writeln!(
            out,
            "lease {}: TTL {}s, {} left",
            lease.id,
            lease.ttl,
            seconds_left(lease.remaining_ms)
        )?;
        for key in lease.keys.iter().flatten() {
            writeln!(out, "  {key}")?;
        }
        Ok(())
    }
}

fn seconds_left(remaining_ms: i64) -> String {
    format!("{:.1}s", remaining_ms.max(0) as f64 / 1000.0)
}

/// Runs a `kg lease` subcommand.
pub async fn lease(
    endpoints: &Endpoints,
    command: LeaseCommand,
    format: Output,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    match command {
        LeaseCommand::Grant { ttl } => {
            let grant = endpoints
                .call(|client| async move { client.lease_grant(ttl).await })
                .await?;
            emit(out, format, &Granted(grant))?;
        }
        LeaseCommand::Keepalive { id, forever } => loop {
            let grant = endpoints
                .call(|client| async move { client.lease_keepalive(id).await })
                .await?;
            emit(out, format, &KeptAlive(grant))?;
            out.flush()?;
            if !forever {
                break;
            }
            tokio::time::sleep(keepalive_interval(grant.ttl)).await;
        },
        LeaseCommand::Revoke { id } => {
            let response = endpoints
                .call(|client| async move { client.lease_revoke(id).await })
                .await?;
            emit(out, format, &Revoked { id, response })?;
        }
        LeaseCommand::List => {
            let leases = endpoints
                .call(|client| async move { client.leases().await })
                .await?;
            emit(out, format, &Leases(leases))?;
        }
        LeaseCommand::Show { id } => {
            let lease = endpoints
                .call(|client| async move { client.lease(id).await })
                .await?;
            emit(out, format, &Shown(lease))?;
        }
    }
    Ok(0)
}

/// A third of the TTL, as etcd's clients keep leases alive: two keep-alives can be lost
/// before the lease runs out.
fn keepalive_interval(ttl: u64) -> Duration {
    Duration::from_millis(ttl.saturating_mul(1000) / 3).max(Duration::from_millis(100))
}

/// The lock once held: its key (what etcdctl prints) and its lease.
#[derive(Debug, Serialize)]
pub struct Held {
    pub key: String,
    pub lease: i64,
}

impl Render for Held {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{}", self.key)
    }
}

/// `kg lock`: waits for the lock, holds it while the command runs or until ctrl-c, and
/// releases it by revoking its lease.
pub async fn lock(
    endpoints: &Endpoints,
    args: LockArgs,
    format: Output,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    if args.name.is_empty() {
        return Err(CliError::Usage(
            "the lock's name must not be empty".to_owned(),
        ));
    }
    // From here on, a ctrl-c is kept until `hold` looks, however busy kg is when it comes.
    let mut interrupt = Interrupt::new();
    let ttl = args.ttl;
    // Nothing is held yet: a ctrl-c while the grant waits (on a silent node, say) ends kg at
    // once, leaving at most a lease without a key to its TTL.
    let grant = tokio::select! {
        grant = endpoints.call(|client| async move { client.lease_grant(ttl).await }) => grant?,
        () = interrupt.recv() => return Ok(EXIT_INTERRUPTED),
    };
    let keeper = tokio::spawn(keep_alive(endpoints.clone(), grant));
    let held = hold(endpoints, &args, grant.id, format, out, &mut interrupt).await;
    keeper.abort();
    // Released whatever happened: revoking deletes the lock's key, which wakes the next
    // waiter. A lease already gone (expired while we were stuck) needs nothing more.
    // A ctrl-c while the release waits gives up on it: the lease then ends at its TTL.
    let released = tokio::select! {
        released = endpoints.call(|client| async move { client.lease_revoke(grant.id).await }) => released,
        () = interrupt.recv() => return Ok(EXIT_INTERRUPTED),
    };
    match (held, released) {
        (Err(err), _) => Err(err),
        (Ok(code), Ok(_) | Err(kg_api::Error::NotFound { .. })) => Ok(code),
        (Ok(_), Err(err)) => Err(err.into()),
    }
}

/// Keeps the lease alive every third of its TTL; returns once it is gone (expired or revoked)
/// or could not be renewed within its TTL.
async fn keep_alive(endpoints: Endpoints, grant: LeaseGrant) -> kg_api::Error {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(keepalive_interval(grant.ttl)).await;
        match endpoints
            .call(|client| async move { client.lease_keepalive(grant.id).await })
            .await
        {
            Ok(_) => last_renewed = tokio::time::Instant::now(),
            Err(err @ kg_api::Error::NotFound { .. }) => return err,
            Err(err) if last_renewed.elapsed() >= Duration::from_secs(grant.ttl) => return err,
            // A node or the database briefly away: the next try may land in time.
            Err(_) => {}
        }
    }
}

/// Takes the lock, announces it, then runs the command (or waits for ctrl-c) while watching
/// that the lease is still alive.
async fn hold(
    endpoints: &Endpoints,
    args: &LockArgs,
    lease: i64,
    format: Output,
    out: &mut dyn Write,
    interrupt: &mut Interrupt,
) -> Result<u8, CliError> {
    // Fixed width, so that no holder's key is a prefix of another's.
    let key = format!("{}/{lease:016x}", args.name);
    let pid = std::process::id().to_string();
    let written = endpoints
        .call(|client| {
            let (key, pid) = (key.clone(), pid.clone());
            async move {
                client
                    .put_with(&key, &pid, Precondition::CreateOnly, Attach::Lease(lease))
                    .await
            }
        })
        .await?;
    let prefix = format!("{}/", args.name);
    tokio::select! {
        waited = wait_turn(endpoints, &prefix, written.create_revision) => waited?,
        () = interrupt.recv() => return Ok(EXIT_INTERRUPTED),
    }
    emit(out, format, &Held { key, lease })?;
    out.flush()?;
    let lost = lease_lost(endpoints, lease);
    if args.command.is_empty() {
        tokio::select! {
            () = interrupt.recv() => Ok(EXIT_INTERRUPTED),
            err = lost => Err(lost_lock(lease, err)),
        }
    } else {
        let mut child = tokio::process::Command::new(&args.command[0])
            .args(&args.command[1..])
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| CliError::Usage(format!("cannot run {:?}: {err}", args.command[0])))?;
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                // A command killed by a signal has no code: 128 + signal, as shells say.
                Ok(status.code().map_or_else(
                    || exit_code_of_signal(&status),
                    |code| u8::try_from(code).unwrap_or(1),
                ))
            }
            () = interrupt.recv() => {
                let _ = child.wait().await;
                Ok(EXIT_INTERRUPTED)
            }
            err = lost => {
                let _ = child.kill().await;
                Err(lost_lock(lease, err))
            }
        }
    }
}

/// Ctrl-c for `kg lock`, which handles it itself (kg's own handler ends the process at once)
/// to release the lock first. One handler for the whole command: a ctrl-c that comes while
/// nothing waits on it (between two selects) is kept for the next wait, where a fresh
/// `tokio::signal::ctrl_c()` would miss it.
struct Interrupt {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                signal: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves at the next ctrl-c (or one that came since the last); never without a handler.
    async fn recv(&mut self) {
        #[cfg(unix)]
        match &mut self.signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(unix)]
fn exit_code_of_signal(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    status
        .signal()
        .and_then(|signal| u8::try_from(128 + signal).ok())
        .unwrap_or(1)
}

#[cfg(not(unix))]
fn exit_code_of_signal(_: &std::process::ExitStatus) -> u8 {
    1
}

fn lost_lock(lease: i64, err: kg_api::Error) -> CliError {
    CliError::Unavailable(format!(
        "lost the lock: lease {lease} could not be kept alive ({err})"
    ))
}

/// Resolves once the lease is gone, checking every third of a second.
async fn lease_lost(endpoints: &Endpoints, lease: i64) -> kg_api::Error {
    loop {
        tokio::time::sleep(Duration::from_millis(333)).await;
        if let Err(err @ kg_api::Error::NotFound { .. }) = endpoints
            .call(|client| async move { client.lease(lease).await })
            .await
        {
            return err;
        }
    }
}

/// Waits until no key under `prefix` was created before ours: each waiter watches only the
/// key just before its own, so a release wakes one waiter, not all (no thundering herd).
async fn wait_turn(endpoints: &Endpoints, prefix: &str, mine: i64) -> Result<(), CliError> {
    loop {
        let holders = endpoints
            .call(|client| async move { client.list_all(Some(prefix), 1000).await })
            .await?;
        let Some(before) = holders
            .iter()
            .filter(|record| record.create_revision < mine)
            .max_by_key(|record| record.create_revision)
        else {
            return Ok(());
        };
        // From our own revision: the predecessor's delete, whenever it came, is after it.
        let watched = before.key.clone();
        let stream = endpoints
            .call(|client| {
                let watched = watched.clone();
                async move { client.watch(Some(&watched), Some(mine)).await }
            })
            .await;
        let Ok(mut stream) = stream else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        while let Some(item) = stream.next_item().await {
            match item {
                Ok(WatchItem::Change(event))
                    if event.key == watched && event.kind == EventType::Delete =>
                {
                    break
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

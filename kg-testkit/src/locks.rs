//! Another session holding a database lock for a while, as a long write or a stuck client
//! would: the timing edges (a statement that waits on a lock, a lease that runs out while a
//! request waits) that random load rarely reaches.

use std::time::Duration;

use sqlx::Connection as _;
use tokio::task::JoinHandle;

/// Holds the revision lock of the store at `url` for `hold`, from another session: on
/// PostgreSQL the `kg_meta` row `FOR UPDATE`, which every write batch, transaction, prefix
/// delete and lease end takes first; on SQLite the write lock (`BEGIN IMMEDIATE`), which
/// every write takes. Reads go on. Returns once the lock is held; the task ends when it has
/// been let go.
pub async fn hold_revision_lock(url: &str, hold: Duration) -> JoinHandle<()> {
    let statements: &[&str] = if url.starts_with("sqlite:") {
        &["BEGIN IMMEDIATE"]
    } else {
        &[
            "BEGIN",
            "SELECT revision FROM kg_meta WHERE id = 1 FOR UPDATE",
        ]
    };
    hold_with(url, statements, hold).await
}

/// Runs `statements` on a session of its own and keeps their transaction open for `hold`,
/// then rolls it back. Returns once the statements have run.
pub async fn hold_with(url: &str, statements: &[&str], hold: Duration) -> JoinHandle<()> {
    let (held, is_held) = tokio::sync::oneshot::channel();
    let url = url.to_owned();
    let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
    let task = tokio::spawn(async move {
        // Two arms rather than sqlx's Any driver, which the workspace does not build.
        if url.starts_with("sqlite:") {
            let connection = sqlx::SqliteConnection::connect(&url).await;
            run_and_hold(connection, &url, &statements, hold, held).await;
        } else {
            let connection = sqlx::PgConnection::connect(&url).await;
            run_and_hold(connection, &url, &statements, hold, held).await;
        }
    });
    is_held.await.expect("the lock was taken");
    task
}

async fn run_and_hold<C>(
    connection: Result<C, sqlx::Error>,
    url: &str,
    statements: &[String],
    hold: Duration,
    held: tokio::sync::oneshot::Sender<()>,
) where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    for<'q> <C::Database as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, C::Database>,
{
    let mut connection = connection.unwrap_or_else(|err| panic!("connect to {url}: {err}"));
    for statement in statements {
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap_or_else(|err| panic!("{statement}: {err}"));
    }
    let _ = held.send(());
    tokio::time::sleep(hold).await;
    sqlx::query("ROLLBACK")
        .execute(&mut connection)
        .await
        .expect("rollback");
    let _ = connection.close().await;
}

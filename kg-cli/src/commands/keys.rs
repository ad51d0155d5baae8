//! `kg put`, `kg get`, `kg delete`: one key at a time.

use std::io::{self, Read, Write};

use kg_api::{Attach, Endpoints, Precondition};
use serde::Serialize;

use crate::cli::{DeleteArgs, GetArgs, PutArgs};
use crate::output::Render;
use crate::CliError;

/// What `kg put` and `kg delete` print: the write's revision.
#[derive(Debug, Serialize)]
pub struct Written {
    pub key: String,
    pub revision: i64,
    /// Left out for a delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    pub node: Option<String>,
}

impl Render for Written {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "OK revision {}", self.revision)
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{}", self.revision)
    }
}

/// What `kg get` prints.
#[derive(Debug, Serialize)]
pub struct Got {
    pub key: String,
    pub value: String,
    pub revision: i64,
    pub create_revision: i64,
    pub version: i64,
    pub node: Option<String>,
    /// `hit` or `miss` when the node says.
    pub cache: Option<&'static str>,
    /// The key's lease and the seconds left on it, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_remaining: Option<f64>,
}

impl Render for Got {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{}", self.value)
    }

    /// The value's bytes alone, without a newline: `kg get -o raw k > file` round-trips.
    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self.value.as_bytes())
    }
}

pub async fn put(
    endpoints: &Endpoints,
    args: PutArgs,
    input: &mut dyn Read,
) -> Result<Written, CliError> {
    let value = if args.value == "-" {
        let mut value = String::new();
        input
            .read_to_string(&mut value)
            .map_err(|err| CliError::File(format!("cannot read the value from stdin: {err}")))?;
        value
    } else {
        args.value
    };
    let precondition = match (args.if_revision, args.create_only) {
        (Some(revision), _) => Precondition::IfRevision(revision),
        (None, true) => Precondition::CreateOnly,
        (None, false) => Precondition::None,
    };
    let attach = match (args.ttl, args.lease) {
        (Some(ttl), _) => Attach::Ttl(ttl),
        (None, Some(lease)) => Attach::Lease(lease),
        (None, None) => Attach::None,
    };
    let key = args.key;
    let written = endpoints
        .call(|client| {
            let (key, value) = (key.clone(), value.clone());
            async move { client.put_with(&key, &value, precondition, attach).await }
        })
        .await?;
    Ok(Written {
        key,
        revision: written.revision,
        create_revision: Some(written.create_revision),
        version: Some(written.version),
        node: written.meta.node,
    })
}

pub async fn get(endpoints: &Endpoints, args: GetArgs) -> Result<Got, CliError> {
    let (key, revision) = (args.key, args.revision);
    let read = endpoints
        .call(|client| {
            let key = key.clone();
            async move {
                match revision {
                    Some(revision) => client.get_at(&key, revision).await,
                    None => client.get(&key).await,
                }
            }
        })
        .await?;
    Ok(Got {
        key,
        value: read.value,
        revision: read.mod_revision,
        create_revision: read.create_revision,
        version: read.version,
        node: read.meta.node,
        cache: read
            .meta
            .cache_hit
            .map(|hit| if hit { "hit" } else { "miss" }),
        lease: read.lease,
        ttl_remaining: read.ttl_remaining_ms.map(|ms| ms as f64 / 1000.0),
    })
}

/// What `kg delete --prefix` and `--all` print: how many keys the one revision deleted.
#[derive(Debug, Serialize)]
pub struct DeletedRange {
    pub prefix: String,
    pub deleted: u64,
    /// The deletes' revision; with nothing deleted, the current one.
    pub revision: i64,
}

impl Render for DeletedRange {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let keys = if self.deleted == 1 { "key" } else { "keys" };
        writeln!(
            out,
            "OK deleted {} {keys} at revision {}",
            self.deleted, self.revision
        )
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{}", self.deleted)
    }
}

/// `kg delete --prefix P` or `kg delete --all`.
pub async fn delete_range(
    endpoints: &Endpoints,
    args: DeleteArgs,
) -> Result<DeletedRange, CliError> {
    let prefix = args.key.unwrap_or_default();
    if prefix.is_empty() && !args.all {
        return Err(CliError::Usage(
            "an empty prefix is every key: to delete every key, say kg delete --all".to_owned(),
        ));
    }
    let deleted = endpoints
        .call(|client| {
            let prefix = prefix.clone();
            async move { client.delete_prefix(&prefix, args.all).await }
        })
        .await?;
    Ok(DeletedRange {
        prefix,
        deleted: deleted.deleted,
        revision: deleted.revision,
    })
}

pub async fn delete(endpoints: &Endpoints, args: DeleteArgs) -> Result<Written, CliError> {
    let precondition = args
        .if_revision
        .map_or(Precondition::None, Precondition::IfRevision);
    let key = args.key.unwrap_or_default();
    let deleted = endpoints
        .call(|client| {
            let key = key.clone();
            async move { client.delete(&key, precondition).await }
        })
        .await?;
    Ok(Written {
        key,
        revision: deleted.revision,
        create_revision: None,
        version: None,
        node: deleted.meta.node,
    })
}

//! `kg watch`: follows `/api/watch` for a key, a prefix or every key, reconnecting with the
//! last revision seen.

use std::io::{self, Write};
use std::time::Duration;

use kg_api::{ChangeEvent, Endpoints, WatchItem};
use serde::Serialize;

use crate::cli::{Output, WatchArgs};
use crate::output::{emit, Render};
use crate::CliError;

/// One change: JSON as the event stream sent it, text (and raw) one line per event.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Event(pub ChangeEvent);

impl Render for Event {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let event = &self.0;
        let kind = match event.kind {
            kg_api::EventType::Put => "PUT",
            kg_api::EventType::Delete => "DELETE",
        };
        // One line per event: control characters in the value are escaped. A value too large
        // for an event is named by its size, not silently missing.
        let value = match (&event.value, event.value_bytes) {
            (Some(value), _) => format!(" = {}", value.escape_debug()),
            (None, Some(bytes)) => format!(" = <{bytes} bytes, not in the event>"),
            (None, None) => String::new(),
        };
        // A delete made by a lease's end says so: `(rev 9, node n1, expired)`.
        let reason = event
            .reason
            .map(|reason| format!(", {}", reason.as_str()))
            .unwrap_or_default();
        writeln!(
            out,
            "{} {:<6} {}{}  (rev {}, node {}{reason})",
            event.at.format("%H:%M:%S%.3f"),
            kind,
            event.key,
            value,
            event.revision,
            event.node
        )
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        self.text(out)
    }
}

/// A progress event: `{"type": "progress", "revision": N}`, beside changes' `"type": "put"`.
#[derive(Debug, Serialize)]
pub struct Progress {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub revision: i64,
}

impl Render for Progress {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{} PROGRESS up to rev {}",
            chrono::Utc::now().format("%H:%M:%S%.3f"),
            self.revision
        )
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        self.text(out)
    }
}

/// Prints events until `--count` of them; a node that is down or restarting is retried, as
/// `kg watch` is meant to outlive it.
pub async fn watch(
    endpoints: &Endpoints,
    args: WatchArgs,
    format: Output,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    // The stream resumes after `last`, the last revision seen: one before the first wanted.
    let mut last = args.from_revision.map(|first| (first - 1).max(0));
    let mut seen = 0_usize;
    let mut failures = 0_u32;
    // One key is watched as the prefix it is, keeping only its own events.
    let exact = (!args.prefix).then(|| args.key.clone()).flatten();
    loop {
        let prefix = args.key.clone();
        let stream = endpoints
            .call(|client| {
                let prefix = prefix.clone();
                async move {
                    client
                        .watch_with(prefix.as_deref(), last, args.progress)
                        .await
                }
            })
            .await;
        let mut stream = match stream {
            Ok(stream) => {
                failures = 0;
                stream
            }
            Err(err)
                if failures < 30
                    && (err.is_connect() || matches!(err, kg_api::Error::Unavailable { .. })) =>
            {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        while let Some(item) = stream.next_item().await {
            let event = match item {
                Ok(WatchItem::Change(event)) => event,
                Ok(WatchItem::Progress(revision)) => {
                    // Everything up to here was sent: a reconnect resumes after it.
                    last = Some(revision);
                    emit(
                        out,
                        format,
                        &Progress {
                            kind: "progress",
                            revision,
                        },
                    )?;
                    out.flush()?;
                    continue;
                }
                // History the watch needed was compacted away: the caller must list again.
                Err(err) if err.status().is_some_and(|status| status.as_u16() == 410) => {
                    return Err(err.into())
                }
                Err(_) => break,
            };
            last = stream.resume_after();
            if exact.as_ref().is_some_and(|key| *key != event.key) {
                continue;
            }
            emit(out, format, &Event(event))?;
            out.flush()?;
            seen += 1;
            if args.count.is_some_and(|count| seen >= count) {
                return Ok(0);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

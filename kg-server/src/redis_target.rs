//! Where the node's Redis is: one URL, or the current master of a group that Redis Sentinel
//! watches. Every (re)connection asks anew, so that after a Sentinel failover the cache, the
//! event subscription and the heartbeat all follow the promoted replica.

use std::sync::Arc;

use anyhow::Context as _;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::RedisResult;

use crate::store::redact_url;

#[derive(Clone)]
pub enum RedisTarget {
    Url {
        client: redis::Client,
        shown: String,
    },
    Sentinel {
        /// Behind a lock: asking is a `&mut` call, and it remembers which Sentinel answered.
        client: Arc<tokio::sync::Mutex<SentinelClient>>,
        shown: String,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

impl RedisTarget {
    /// A single server at `url`.
    pub fn url(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .with_context(|| format!("invalid redis url {}", redact_url(url)))?;
        Ok(Self::Url {
            client,
            shown: redact_url(url),
        })
    }

    /// The master named `master` that the Sentinels at `sentinels` (`HOST:PORT` each) watch.
    pub fn sentinel(sentinels: &[String], master: &str) -> anyhow::Result<Self> {
        if sentinels.is_empty() {
            anyhow::bail!("--redis-sentinel names no Sentinel");
        }
        let urls: Vec<String> = sentinels
            .iter()
            .map(|address| format!("redis://{}", address.trim()))
            .collect();
        let client = SentinelClient::build(
            urls.clone(),
            master.to_owned(),
            None,
            SentinelServerType::Master,
        )
        .with_context(|| format!("invalid --redis-sentinel {}", sentinels.join(",")))?;
        Ok(Self::Sentinel {
            client: Arc::new(tokio::sync::Mutex::new(client)),
            shown: format!("sentinel master {master} via {}", sentinels.join(",")),
        })
    }

    /// A client for the server to use now: the URL's, or the master the Sentinels name
    /// (which redis-rs checks answers ROLE as a master).
    pub async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            Self::Url { client, .. } => Ok(client.clone()),
            Self::Sentinel { client, .. } => client.lock().await.async_get_client().await,
        }
    }

    /// Whether the server can change under the same target (a failover).
    pub fn follows_failover(&self) -> bool {
        matches!(self, Self::Sentinel { .. })
    }

    /// For logs and errors, without a password.
    pub fn shown(&self) -> &str {
        match self {
            Self::Url { shown, .. } | Self::Sentinel { shown, .. } => shown,
        }
    }
}

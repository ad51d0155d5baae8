//! The data tier's members, for the dashboard's data-tier panel: PostgreSQL's from Patroni's
//! REST API (`GET /cluster` on any member), Redis's from the Sentinels (`SENTINEL MASTER` and
//! `SENTINEL REPLICAS`). Parsing is apart from fetching so that both answers are tested as
//! the real servers give them.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// Bound on each Patroni or Sentinel call, so that a dead member is reported quickly.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// One member of the data tier as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierMember {
    /// `postgres` or `redis`.
    pub kind: &'static str,
    pub name: String,
    /// Patroni's role (`leader`, `sync_standby`, `replica`) or Redis's (`master`, `replica`).
    pub role: String,
    /// Patroni's state (`running`, `streaming`, ...) or the Sentinels' view (`up`, `down`).
    pub state: String,
    /// Replication lag in bytes, where Patroni reports it.
    pub lag: Option<u64>,
}

/// What one poll of the data tier found: the members it could learn of, and why a part could
/// not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierSnapshot {
    pub members: Vec<TierMember>,
    pub errors: Vec<String>,
}

impl TierSnapshot {
    /// The member that leads `kind` now: Patroni's leader, or Redis's master.
    pub fn leader(&self, kind: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.kind == kind && (m.role == "leader" || m.role == "master"))
            .map(|m| m.name.as_str())
    }
}

/// Where the data tier can be asked.
#[derive(Debug, Clone, Default)]
pub struct TierSources {
    /// Patroni REST API base URLs; the first that answers speaks for the cluster.
    pub patroni: Vec<String>,
    /// Sentinel addresses (`HOST:PORT`); the first that answers speaks for Redis.
    pub sentinels: Vec<String>,
    /// The Redis primary's name in the Sentinels' configuration.
    pub master: String,
}

impl TierSources {
    pub fn is_empty(&self) -> bool {
        self.patroni.is_empty() && self.sentinels.is_empty()
    }

    /// Asks every source once.
    pub async fn poll(&self, http: &reqwest::Client) -> TierSnapshot {
        let mut snapshot = TierSnapshot::default();
        if !self.patroni.is_empty() {
            match first_answer(&self.patroni, |url| patroni_cluster(http, url)).await {
                Ok(members) => snapshot.members.extend(members),
                Err(err) => snapshot.errors.push(format!("patroni: {err}")),
            }
        }
        if !self.sentinels.is_empty() {
            match first_answer(&self.sentinels, |addr| sentinel_view(addr, &self.master)).await {
                Ok(members) => snapshot.members.extend(members),
                Err(err) => snapshot.errors.push(format!("sentinel: {err}")),
            }
        }
        snapshot
    }
}

/// The first of `sources` that `ask` gets an answer from, or the last error.
async fn first_answer<'a, F, Fut>(sources: &'a [String], ask: F) -> Result<Vec<TierMember>, String>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<TierMember>, String>>,
{
    let mut last = String::from("no source");
    for source in sources {
        match ask(source).await {
            Ok(members) => return Ok(members),
            Err(err) => last = format!("{source}: {err}"),
        }
    }
    Err(last)
}

async fn patroni_cluster(http: &reqwest::Client, base: &str) -> Result<Vec<TierMember>, String> {
    let url = format!("{}/cluster", base.trim_end_matches('/'));
    let body = http
        .get(&url)
        .timeout(CALL_TIMEOUT)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|err| err.to_string())?
        .text()
        .await
        .map_err(|err| err.to_string())?;
    parse_patroni_cluster(&body)
}

#[derive(Deserialize)]
struct PatroniCluster {
    members: Vec<PatroniMember>,
}

#[derive(Deserialize)]
struct PatroniMember {
    name: String,
    role: String,
    state: String,
    /// A number of bytes, or the string "unknown" while Patroni cannot tell.
    #[serde(default)]
    lag: Option<serde_json::Value>,
}

/// Patroni's `GET /cluster` answer, its members in the order Patroni lists them.
pub fn parse_patroni_cluster(body: &str) -> Result<Vec<TierMember>, String> {
    let cluster: PatroniCluster =
        serde_json::from_str(body).map_err(|err| format!("unexpected /cluster answer: {err}"))?;
    Ok(cluster
        .members
        .into_iter()
        .map(|m| TierMember {
            kind: "postgres",
            name: m.name,
            role: m.role,
            state: m.state,
            lag: m.lag.and_then(|lag| lag.as_u64()),
        })
        .collect())
}

async fn sentinel_view(address: &str, master: &str) -> Result<Vec<TierMember>, String> {
    let client =
        redis::Client::open(format!("redis://{address}")).map_err(|err| err.to_string())?;
    let call = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let master_fields: Vec<String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(master)
            .query_async(&mut conn)
            .await?;
        let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(master)
            .query_async(&mut conn)
            .await?;
        Ok::<_, redis::RedisError>((master_fields, replicas))
    };
    let (master_fields, replicas) = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|err| err.to_string())?;
    Ok(parse_sentinel(&master_fields, &replicas))
}

/// A Sentinel's `SENTINEL MASTER` and `SENTINEL REPLICAS` answers (flat field/value lists):
/// the master first, then its replicas, each named by its address.
pub fn parse_sentinel(master: &[String], replicas: &[Vec<String>]) -> Vec<TierMember> {
    let member = |fields: &[String], role: &str| {
        let map: HashMap<&str, &str> = fields
            .chunks(2)
            .filter_map(|pair| match pair {
                [field, value] => Some((field.as_str(), value.as_str())),
                _ => None,
            })
            .collect();
        let flags = map.get("flags").copied().unwrap_or_default();
        TierMember {
            kind: "redis",
            name: format!(
                "{}:{}",
                map.get("ip").copied().unwrap_or("?"),
                map.get("port").copied().unwrap_or("?")
            ),
            role: role.to_owned(),
            // The Sentinels mark a member they cannot reach s_down (one of them) or o_down
            // (a quorum).
            state: if flags.contains("_down") || flags.contains("disconnected") {
                "down".to_owned()
            } else {
                "up".to_owned()
            },
            lag: None,
        }
    };
    std::iter::once(member(master, "master"))
        .chain(replicas.iter().map(|fields| member(fields, "replica")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patroni 3.0's answer on `scripts/start.sh --ha`'s cluster, as it gave it (pg3 leads).
    const CLUSTER: &str = r#"{"members": [{"name": "pg1", "role": "sync_standby", "state": "running", "api_url": "http://127.0.0.1:8008/patroni", "host": "127.0.0.1", "port": 5451, "timeline": 1, "lag": 0}, {"name": "pg2", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:8009/patroni", "host": "127.0.0.1", "port": 5452, "timeline": 1, "lag": 0}, {"name": "pg3", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:8010/patroni", "host": "127.0.0.1", "port": 5453, "timeline": 1}]}"#;

    fn strings(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn patroni_members_keep_their_roles_and_a_known_lag() {
        let members = parse_patroni_cluster(CLUSTER).unwrap();
        let shown: Vec<(&str, &str, &str, Option<u64>)> = members
            .iter()
            .map(|m| (m.name.as_str(), m.role.as_str(), m.state.as_str(), m.lag))
            .collect();
        assert_eq!(
            shown,
            [
                ("pg1", "sync_standby", "running", Some(0)),
                ("pg2", "replica", "running", Some(0)),
                ("pg3", "leader", "running", None)
            ]
        );
        // Patroni says "unknown" for a lag it cannot tell: no figure rather than an error.
        let unknown = r#"{"members": [{"name": "pg2", "role": "replica", "state": "starting", "lag": "unknown"}]}"#;
        assert_eq!(parse_patroni_cluster(unknown).unwrap()[0].lag, None);
        assert!(parse_patroni_cluster("<html>").is_err());
    }

    #[test]
    fn sentinel_answers_give_the_master_then_its_replicas() {
        let master = strings(&[
            "name",
            "keygrid",
            "ip",
            "127.0.0.1",
            "port",
            "6390",
            "flags",
            "master",
        ]);
        let replicas = vec![strings(&[
            "name",
            "127.0.0.1:6389",
            "ip",
            "127.0.0.1",
            "port",
            "6389",
            "flags",
            "s_down,slave,disconnected",
        ])];
        let members = parse_sentinel(&master, &replicas);
        let shown: Vec<(&str, &str, &str)> = members
            .iter()
            .map(|m| (m.name.as_str(), m.role.as_str(), m.state.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("127.0.0.1:6390", "master", "up"),
                ("127.0.0.1:6389", "replica", "down")
            ]
        );
        let snapshot = TierSnapshot {
            members: parse_patroni_cluster(CLUSTER)
                .unwrap()
                .into_iter()
                .chain(members)
                .collect(),
            errors: Vec::new(),
        };
        assert_eq!(snapshot.leader("postgres"), Some("pg3"));
        assert_eq!(snapshot.leader("redis"), Some("127.0.0.1:6390"));
    }
}

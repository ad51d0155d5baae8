//! The fault runtime: kill, stop, start, pause, resume and flush a member of the stack (a
//! node, PostgreSQL, Redis) through the local stack's `scripts/node.sh`, `docker compose`, or
//! commands of the user's own. Every drill (kg failover-drill, kg-bench chaos) acts through it,
//! as a list of `Step`s.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::process::Command as Process;

/// What a fault acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Member {
    /// A KeyGrid node, by the runtime's name for it (`n1`, or compose's `backend1`).
    Node(String),
    Postgres,
    Redis,
}

impl FromStr for Member {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "" => Err("an empty member name".to_owned()),
            "postgres" => Ok(Member::Postgres),
            "redis" => Ok(Member::Redis),
            node if node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                Ok(Member::Node(node.to_owned()))
            }
            other => Err(format!("{other:?} is not a member name")),
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::Node(name) => f.write_str(name),
            Member::Postgres => f.write_str("postgres"),
            Member::Redis => f.write_str("redis"),
        }
    }
}

impl From<Member> for String {
    fn from(member: Member) -> String {
        member.to_string()
    }
}

/// What is done to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Graceful: a node drains its requests; it stays down.
    Stop,
    /// Start it (again) and wait until it is ready.
    Start,
    /// A crash: SIGKILL (PostgreSQL: an immediate shutdown, no checkpoint). It stays down.
    Kill,
    /// SIGSTOP: the process holds its sockets and answers nothing.
    Pause,
    /// SIGCONT after a pause.
    Resume,
    /// Redis only: FLUSHALL.
    Flush,
    /// PostgreSQL under Patroni only: a planned switchover to the synchronous standby.
    Switchover,
    /// PostgreSQL under Patroni only: synchronous replication off, so that a failover may
    /// lose acknowledged commits; only the negative control does this.
    Async,
    /// PostgreSQL under Patroni only: synchronous replication on again (strict).
    Sync,
    /// PostgreSQL under Patroni only (`scripts/ha.sh zombie`): the leader frozen inside its
    /// leader-key update until another member leads and has committed writes; a `Resume`
    /// wakes it there. The deterministic zombie primary.
    Zombie,
    /// PostgreSQL only: another session takes the revision lock (`kg_meta FOR UPDATE`) and
    /// holds it until `Unlock`: every write waits past the nodes' `--db-timeout`, and those
    /// already sent commit when it is let go, after their node answered 503.
    LockRevision,
    /// PostgreSQL only: another session holds the keys' table in ACCESS EXCLUSIVE mode until
    /// `Unlock`: every statement on the keys, reads too, waits.
    LockTable,
    /// PostgreSQL only: ends the locks the two above hold.
    Unlock,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Flush => "flush",
            Action::Switchover => "switchover",
            Action::Async => "async",
            Action::Sync => "sync",
            Action::Zombie => "zombie",
            Action::LockRevision => "lock-revision",
            Action::LockTable => "lock-table",
            Action::Unlock => "unlock",
        }
    }
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Do(Action, Member),
    /// Hold the fault for this long.
    Wait(Duration),
    /// A network fault between the hosts of `start.sh --hosts`: the arguments of
    /// `scripts/net.sh` (beside the runtime's script), such as `partition pg-leader / etcd1`.
    Net(Vec<String>),
}

impl Step {
    /// The network fault of `scripts/net.sh` whose arguments are `words`, split on spaces.
    pub fn net(words: &str) -> Step {
        Step::Net(words.split_whitespace().map(str::to_owned).collect())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Do(action, member) => write!(f, "{} {member}", action.name()),
            Step::Wait(duration) => write!(f, "wait {} ms", duration.as_millis()),
            Step::Net(words) => write!(f, "net {}", words.join(" ")),
        }
    }
}

/// How faults reach the stack.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// The local stack's `scripts/node.sh ACTION MEMBER` (or `scripts/ha.sh`, which also
    /// knows the replicated data tier); pause signals every pid that `SCRIPT pid MEMBER`
    /// names, and resume those same pids (see [`Runtime::local`]). Its supervisor restarts a
    /// node that dies on its own, as compose's `restart: unless-stopped` does, and leaves one
    /// it stopped or killed.
    Local {
        script: PathBuf,
        /// The pids each member name was paused as, until its resume.
        paused: Paused,
    },
    /// `docker compose ACTION SERVICE`, or `docker-compose` (see `compose`); pause and resume
    /// are compose's pause and unpause.
    Compose,
    /// Shell commands of the user's own, `{node}` replaced by the member's name: `stop` also
    /// serves for kill; `start` for start.
    Command { stop: String, start: String },
}

/// The pids a pause stopped, by the member name it was given: a role such as `pg-leader`
/// names another member once a failover has happened, and the resume must wake the
/// processes the pause stopped, not the new holder of the role.
pub type Paused = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>;

impl Runtime {
    /// The local stack's runtime over `script` (scripts/node.sh or scripts/ha.sh).
    pub fn local(script: PathBuf) -> Self {
        Runtime::Local {
            script,
            paused: Paused::default(),
        }
    }

    /// Does `action` to `member`, and returns once the runtime says it is done.
    pub async fn act(&self, action: Action, member: &Member) -> Result<(), String> {
        let name = member.to_string();
        match self {
            Runtime::Local { script, paused } => match action {
                Action::Pause | Action::Resume => {
                    let remembered = if action == Action::Resume {
                        lock(paused).remove(&name)
                    } else {
                        None
                    };
                    let pids = match remembered {
                        Some(pids) => pids,
                        // One pid per line: a PostgreSQL member is Patroni, the postmaster
                        // and its backends, all stopped together.
                        None => pids_of(script, &name).await?,
                    };
                    if pids.is_empty() {
                        return Err(format!("{name} has no process to {}", action.name()));
                    }
                    pids.iter().try_for_each(|pid| signal(pid, action))?;
                    if action == Action::Pause {
                        lock(paused).insert(name, pids);
                    }
                    Ok(())
                }
                // The script prints the member it froze: its pids are what a resume of the
                // same name wakes, as after a pause.
                Action::Zombie => {
                    let frozen = output(local(script, &[action.name(), &name])).await?;
                    let frozen = frozen.lines().last().unwrap_or_default().trim().to_owned();
                    let pids = pids_of(script, &frozen).await?;
                    if pids.is_empty() {
                        return Err(format!("the frozen member {frozen:?} has no process"));
                    }
                    lock(paused).insert(name, pids);
                    Ok(())
                }
                _ => output(local(script, &[action.name(), &name]))
                    .await
                    .map(drop),
            },
            Runtime::Compose => {
                let verb = match action {
                    Action::Switchover
                    | Action::Async
                    | Action::Sync
                    | Action::Zombie
                    | Action::LockRevision
                    | Action::LockTable
                    | Action::Unlock => {
                        return Err(format!("the compose runtime has no {}", action.name()))
                    }
                    Action::Pause => "pause",
                    Action::Resume => "unpause",
                    Action::Flush => {
                        let mut command = compose(&["exec", "-T", &name, "redis-cli"]);
                        command.arg("flushall");
                        return output(command).await.map(drop);
                    }
                    other => other.name(),
                };
                output(compose(&[verb, &name])).await.map(drop)
            }
            Runtime::Command { stop, start } => {
                let template = match action {
                    Action::Stop | Action::Kill => stop,
                    Action::Start => start,
                    other => {
                        return Err(format!(
                            "the command runtime has no {} (only stop, kill and start)",
                            other.name()
                        ))
                    }
                };
                output(shell(template, &name)).await.map(drop)
            }
        }
    }

    /// Runs `scripts/net.sh WORDS...`, the network faults' script beside the local runtime's.
    pub async fn net(&self, words: &[String]) -> Result<(), String> {
        match self {
            Runtime::Local { script, .. } => {
                let net = script.with_file_name("net.sh");
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                output(local(&net, &words)).await.map(drop)
            }
            _ => Err("network faults need the local runtime of start.sh --hosts".to_owned()),
        }
    }

    /// Runs `steps` in order; returns when each was done, from `origin`, or the first error.
    pub async fn run(&self, steps: &[Step], origin: Instant) -> Result<Vec<Duration>, String> {
        let mut done = Vec::with_capacity(steps.len());
        for step in steps {
            match step {
                Step::Do(action, member) => self
                    .act(*action, member)
                    .await
                    .map_err(|err| format!("{step}: {err}"))?,
                Step::Wait(duration) => tokio::time::sleep(*duration).await,
                Step::Net(words) => self
                    .net(words)
                    .await
                    .map_err(|err| format!("{step}: {err}"))?,
            }
            done.push(origin.elapsed());
        }
        Ok(done)
    }
}

/// The pids `SCRIPT pid MEMBER` names, one per line.
async fn pids_of(script: &PathBuf, member: &str) -> Result<Vec<String>, String> {
    let pids = output(local(script, &["pid", member])).await?;
    Ok(pids.split_whitespace().map(str::to_owned).collect())
}

fn lock(
    paused: &Paused,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<String>>> {
    // A panic while the map was held leaves it whole: each use is one insert or remove.
    paused
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn local(script: &PathBuf, args: &[&str]) -> Process {
    let mut command = Process::new(script);
    command.args(args);
    command
}

/// Compose's command line: `KG_COMPOSE` when set (e.g. `podman-compose`), else `docker
/// compose` (Compose v2, a plugin of the docker CLI) where the docker CLI has it, else the
/// standalone `docker-compose` (Compose v1, as Debian 12 packages it). Either one honours
/// `COMPOSE_FILE`, `COMPOSE_PROJECT_NAME` and `DOCKER_HOST`, so the caller's stack is the one
/// acted on.
fn compose(args: &[&str]) -> Process {
    static COMMAND: OnceLock<Vec<String>> = OnceLock::new();
    let words = COMMAND.get_or_init(|| {
        let custom: Vec<String> = std::env::var("KG_COMPOSE")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !custom.is_empty() {
            return custom;
        }
        // Asked once per process, at its first compose action.
        let plugin = std::process::Command::new("docker")
            .args(["compose", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if plugin {
            vec!["docker".to_owned(), "compose".to_owned()]
        } else {
            vec!["docker-compose".to_owned()]
        }
    });
    let mut command = Process::new(&words[0]);
    command.args(&words[1..]).args(args);
    // docker-compose 1.x would run `exec` through the docker CLI, which knows no DOCKER_HOST
    // from compose's .env; this makes it use the API it already talks to.
    command.env("COMPOSE_INTERACTIVE_NO_CLI", "1");
    command
}

fn shell(template: &str, member: &str) -> Process {
    let mut command = Process::new("sh");
    command.arg("-c").arg(template.replace("{node}", member));
    command
}

fn signal(pid: &str, action: Action) -> Result<(), String> {
    use nix::sys::signal::{kill, Signal};
    let pid: i32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("{pid:?} is not a pid"))?;
    let signal = if action == Action::Pause {
        Signal::SIGSTOP
    } else {
        Signal::SIGCONT
    };
    kill(nix::unistd::Pid::from_raw(pid), signal)
        .map_err(|err| format!("cannot send {signal} to {pid}: {err}"))
}

/// Runs `command` to completion; its stdout, or an error with its stderr.
async fn output(mut command: Process) -> Result<String, String> {
    let shown = format!("{:?}", command.as_std());
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|err| format!("cannot run {shown}: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_print_by_name() {
        assert_eq!("postgres".parse(), Ok(Member::Postgres));
        assert_eq!("redis".parse(), Ok(Member::Redis));
        assert_eq!("n1".parse(), Ok(Member::Node("n1".to_owned())));
        assert_eq!(Member::Node("backend2".to_owned()).to_string(), "backend2");
        assert!("".parse::<Member>().is_err());
        assert!("n1; rm -rf /".parse::<Member>().is_err());
    }

    /// A stand-in for scripts/node.sh that logs what it was asked and names a real process
    /// as the member's pid, so that pause and resume send real signals.
    fn fake_script(dir: &std::path::Path, pid: u32) -> PathBuf {
        let script = dir.join("node.sh");
        let log = dir.join("calls");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> {log}\n[ \"$1\" = pid ] && echo {pid}\n[ \"$2\" != broken ]\n",
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        script
    }

    fn state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The state follows the parenthesised command name.
        stat.rsplit(") ").next().unwrap().chars().next().unwrap()
    }

    /// Whether the process reaches (`stopped`) or leaves the stopped state within 2 s: a
    /// signal is delivered asynchronously.
    fn becomes(pid: u32, stopped: bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if (state(pid) == 'T') == stopped {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// A process to pause, killed (and resumed first) however the test ends.
    struct Sleeper(std::process::Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = signal(&self.0.id().to_string(), Action::Resume);
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn the_local_runtime_runs_the_steps_in_order_and_pauses_a_real_process() {
        let dir = tempfile::tempdir().unwrap();
        let child = Sleeper(
            std::process::Command::new("sleep")
                .arg("30")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = child.0.id();
        let runtime = Runtime::local(fake_script(dir.path(), pid));
        let steps = [
            Step::Do(Action::Kill, "n1".parse().unwrap()),
            Step::Wait(Duration::from_millis(50)),
            Step::Do(Action::Start, "n1".parse().unwrap()),
            Step::Do(Action::Flush, Member::Redis),
            Step::Do(Action::Pause, Member::Postgres),
        ];
        let origin = Instant::now();
        let done = runtime.run(&steps, origin).await.unwrap();
        assert_eq!(done.len(), 5);
        assert!(done[1] >= Duration::from_millis(50) && done.windows(2).all(|w| w[0] <= w[1]));
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert_eq!(calls, "kill n1\nstart n1\nflush redis\npid postgres\n");
        // Stopped (T), then running again once resumed.
        assert!(becomes(pid, true), "state {}", state(pid));
        runtime
            .act(Action::Resume, &Member::Postgres)
            .await
            .unwrap();
        assert!(becomes(pid, false), "state {}", state(pid));
        drop(child);

        let err = runtime
            .run(&[Step::Do(Action::Stop, "broken".parse().unwrap())], origin)
            .await
            .unwrap_err();
        assert!(err.starts_with("stop broken: "), "{err}");
    }

    /// A role (`pg-leader`) names another member once the fault has made a failover: the
    /// resume must wake the processes the pause stopped, not the role's new holder. The
    /// stand-in script names the first sleeper as the role's pid, then the second; for a
    /// zombie it names the member it froze, whose pids the resume wakes too.
    #[tokio::test]
    async fn a_resume_wakes_what_its_pause_stopped_after_the_role_moved() {
        let dir = tempfile::tempdir().unwrap();
        let spawn = || {
            Sleeper(
                std::process::Command::new("sleep")
                    .arg("30")
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        };
        let (first, second) = (spawn(), spawn());
        let (first_pid, second_pid) = (first.0.id(), second.0.id());
        let script = dir.path().join("ha.sh");
        let count = dir.path().join("count");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh
case \"$1 $2\" in
                 'pid pg-leader') n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count};
                   if [ \"$n\" = 0 ]; then echo {first_pid}; else echo {second_pid}; fi ;;
                 'pid pg1') echo {second_pid} ;;
                 'zombie pg-leader') kill -STOP {second_pid}; echo waiting >&2; echo pg1 ;;
                 esac
",
                count = count.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let runtime = Runtime::local(script);
        let leader = Member::Node("pg-leader".to_owned());
        runtime.act(Action::Pause, &leader).await.unwrap();
        assert!(becomes(first_pid, true), "state {}", state(first_pid));
        runtime.act(Action::Resume, &leader).await.unwrap();
        assert!(becomes(first_pid, false), "state {}", state(first_pid));

        runtime.act(Action::Zombie, &leader).await.unwrap();
        assert!(becomes(second_pid, true), "state {}", state(second_pid));
        runtime.act(Action::Resume, &leader).await.unwrap();
        assert!(becomes(second_pid, false), "state {}", state(second_pid));
        drop((first, second));
    }

    #[tokio::test]
    async fn the_command_runtime_fills_in_the_member_and_refuses_what_it_cannot_do() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let runtime = Runtime::Command {
            stop: format!("echo stop {{node}} >> {}", log.display()),
            start: format!("echo start {{node}} >> {}", log.display()),
        };
        let n2: Member = "n2".parse().unwrap();
        runtime.act(Action::Kill, &n2).await.unwrap();
        runtime.act(Action::Start, &n2).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "stop n2\nstart n2\n"
        );
        let err = runtime.act(Action::Pause, &n2).await.unwrap_err();
        assert!(err.contains("no pause"), "{err}");
    }
}

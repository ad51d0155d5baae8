//! A real terminal for tests of what kg and kg-tui do at one: a tmux server of the test's own
//! (its own socket, so it never touches a user's sessions) running one command in a window of
//! a given size, whose screen the test reads and whose keyboard it types on.

use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A 100×30 session named `tui` running `script` under `sh`, on a server named for `name`.
    pub fn start(name: &str, script: &str) -> Self {
        Self::start_sized(name, script, 100, 30)
    }

    /// The same, `width` × `height`.
    pub fn start_sized(name: &str, script: &str, width: u16, height: u16) -> Self {
        let (width, height) = (width.to_string(), height.to_string());
        let tmux = Tmux {
            socket: format!("kgtest-{}-{name}", std::process::id()),
        };
        let started = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "tui",
            "-x",
            &width,
            "-y",
            &height,
            "sh",
            "-c",
            script,
        ]);
        assert!(started.status.success(), "{started:?}");
        tmux
    }

    /// Runs `tmux ARGS` against this server.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is missing: apt-get install tmux (scripts/test.sh installs it)")
    }

    /// Presses `keys` (tmux key names: `q`, `Enter`, `PageDown`, `C-d`).
    pub fn keys(&self, keys: &[&str]) {
        let sent = self.run(&[&["send-keys", "-t", "tui"][..], keys].concat());
        assert!(sent.status.success(), "{sent:?}");
    }

    /// Types `text` as it is, then Enter.
    pub fn line(&self, text: &str) {
        let typed = self.run(&["send-keys", "-t", "tui", "-l", text]);
        assert!(typed.status.success(), "{typed:?}");
        self.keys(&["Enter"]);
    }

    /// What the window shows now, a line per row.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "tui"]).stdout).into_owned()
    }

    /// Waits until the screen passes `check` and returns it. `within` bounds a wait for
    /// something that would otherwise never come (a hung command); it is no measure of speed,
    /// so give it room for a slow machine.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not appear within {within:?}:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

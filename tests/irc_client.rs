//! A real IRC client against the IRC door: Debian's irssi, headless in a tmux session
//! of its own, joins `#general`, talks with a netcat-style line user and a WebSocket
//! user, and quits cleanly.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::inproc::InProcess as Server;
use support::web::{Lines, Ws, WAIT};

/// A tmux server on a socket of its own, so the test touches no other tmux session;
/// killed (with irssi in it) when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    fn start(socket: String, program: &str) -> Tmux {
        let tmux = Tmux { socket };
        let status = tmux
            .command()
            .args([
                "new-session",
                "-d",
                "-s",
                "irc",
                "-x",
                "200",
                "-y",
                "50",
                program,
            ])
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn type_line(&self, text: &str) {
        let status = self
            .command()
            .args(["send-keys", "-t", "irc", "-l", text])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self
            .command()
            .args(["send-keys", "-t", "irc", "Enter"])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-t", "irc"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Wait until the visible screen shows `needle`.
    async fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "irssi never showed {needle:?}; its screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

#[tokio::test]
async fn irssi_joins_general_and_talks_with_netcat_and_browser_users() {
    for program in ["/usr/bin/irssi", "/usr/bin/tmux"] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: run `apt-get install -y --no-install-recommends irssi tmux` (.ci/run does)"
        );
    }
    let server = Server::start(&[]).await;
    let irc = server.addr("irc");
    let home = tempfile::tempdir().unwrap();
    let irssi = format!(
        "irssi --home={} -c {} -p {} -n ircfan",
        home.path().display(),
        irc.ip(),
        irc.port()
    );
    let tmux = Tmux::start(format!("switchboard-test-{}", std::process::id()), &irssi);
    tmux.wait_for("Welcome to Switchboard, ircfan").await;

    let mut nc = Lines::line_login(server.addr("line"), "netty").await;
    let (mut ws, _) = Ws::login(&format!("ws://{}/ws", server.addr("web")), "webby").await;
    // irssi is in #general (every client lands there); make it the active window.
    tmux.type_line("/join #general");
    tmux.wait_for("webby").await;

    nc.send_line("hello from netcat").await;
    tmux.wait_for("hello from netcat").await;
    ws.send(json!({"type": "say", "text": "hello from the browser"}))
        .await;
    tmux.wait_for("hello from the browser").await;

    tmux.type_line("hello from irssi");
    nc.line_containing("[ircfan] hello from irssi").await;
    let said = loop {
        let message = ws.of_type("message").await;
        if message["from"] == "ircfan" {
            break message;
        }
    };
    assert_eq!(said["text"], "hello from irssi");

    tmux.type_line("/me waves");
    nc.line_containing("* ircfan waves").await;

    tmux.type_line("/quit see you");
    nc.line_containing("ircfan left #general (quit: see you)")
        .await;
    server.stop().await;
}

/// irssi logs in with SASL PLAIN (configured as its users do, in its config file),
/// lands under its account's name, and moderates a room it owns with its own /kick
/// and /mode commands.
#[tokio::test]
async fn irssi_logs_in_with_sasl_and_moderates_its_room() {
    for program in ["/usr/bin/irssi", "/usr/bin/tmux"] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: run `apt-get install -y --no-install-recommends irssi tmux` (.ci/run does)"
        );
    }
    let server = Server::start(&["--memory"]).await;
    let line = server.addr("line");
    let mut alice = Lines::line_login(line, "alice").await;
    alice.send_line("/register alice's password").await;
    alice.line_containing("is registered to you").await;
    alice.send_line("/quit").await;
    while alice.line().await.is_some() {}

    let irc = server.addr("irc");
    let home = tempfile::tempdir().unwrap();
    let config = format!(
        r#"servers = ( {{ address = "{ip}"; chatnet = "sb"; port = "{port}"; use_tls = "no"; autoconnect = "yes"; }} );
chatnets = {{ sb = {{ type = "IRC"; sasl_mechanism = "PLAIN"; sasl_username = "alice"; sasl_password = "alice's password"; }}; }};
settings = {{ core = {{ nick = "somebody"; user_name = "someone"; real_name = "Some One"; }}; }};
"#,
        ip = irc.ip(),
        port = irc.port()
    );
    std::fs::write(home.path().join("config"), config).unwrap();
    let irssi = format!("irssi --home={}", home.path().display());
    let tmux = Tmux::start(format!("switchboard-sasl-{}", std::process::id()), &irssi);
    tmux.wait_for("SASL authentication succeeded").await;
    tmux.wait_for("Welcome to Switchboard, alice").await;

    // She makes the room (and so owns it) before bob comes.
    tmux.type_line("/join #irssi");
    tmux.wait_for("alice [alice@switchboard] has joined #irssi")
        .await;
    let mut bob = Lines::line_login(line, "bob").await;
    bob.send_line("/join #irssi").await;
    tmux.wait_for("bob [bob@switchboard] has joined #irssi")
        .await;
    tmux.type_line("/mode +i");
    tmux.wait_for("made the room invite-only").await;
    bob.line_containing("* alice made the room invite-only")
        .await;
    tmux.type_line("/kick bob out you go");
    bob.line_containing("*** bob left #irssi (kicked by alice: out you go)")
        .await;
    bob.send_line("/join #irssi").await;
    bob.line_containing("error: #irssi is invite-only").await;
    tmux.type_line("/quit");
    server.stop().await;
}

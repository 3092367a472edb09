//! Test harness: a real `trellis control-plane` process in a temporary data
//! dir, stopped (and its dir removed) when the test ends, pass or fail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub use super::BIN;

pub struct ControlPlane {
    pub url: String,
    pub data_dir: tempfile::TempDir,
    listen: String,
    extra: Vec<String>,
    child: Option<Child>,
}

impl ControlPlane {
    pub fn start(extra: &[&str]) -> ControlPlane {
        ControlPlane::start_at("127.0.0.1:0", extra)
    }

    pub fn start_at(listen: &str, extra: &[&str]) -> ControlPlane {
        ControlPlane::start_in(tempfile::tempdir().expect("temp dir"), listen, extra)
    }

    /// Starts on `data_dir`, which may hold files already.
    pub fn start_in(data_dir: tempfile::TempDir, listen: &str, extra: &[&str]) -> ControlPlane {
        let mut cp = ControlPlane {
            url: String::new(),
            data_dir,
            listen: listen.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        cp.start_again();
        cp
    }

    /// Starts the process on the same data dir (and the same port, once known).
    pub fn start_again(&mut self) {
        let listen = match self.url.strip_prefix("https://") {
            Some(addr) if !self.listen.starts_with("0.0.0.0") => addr.to_string(),
            _ => self.listen.clone(),
        };
        let mut child = Command::new(BIN)
            .args(["control-plane", "--data-dir"])
            .arg(self.data_dir.path())
            .args(["--listen", &listen])
            .args(&self.extra)
            .env("TRELLIS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn trellis control-plane");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("trellis control plane listening on ")
            .unwrap_or_else(|| panic!("control plane did not start: {line:?}"));
        // 0.0.0.0 is reached through loopback.
        self.url = addr.replace("0.0.0.0", "127.0.0.1");
        self.child = Some(child);
    }

    /// Starts a new process on the same data dir and port while this one
    /// runs: it takes the API socket and the store over; the old one exits.
    pub fn hand_over(&mut self) {
        let old = self.child.take();
        self.start_again();
        if let Some(mut old) = old {
            let t = std::time::Instant::now();
            while old.try_wait().expect("the old control plane").is_none() {
                if t.elapsed() > Duration::from_secs(20) {
                    let _ = old.kill();
                    panic!("the old control plane did not exit after the handover");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let status = old.wait().expect("its status");
            assert!(status.success(), "the old control plane: {status}");
        }
    }

    /// SIGTERM, wait, start again.
    pub fn restart(&mut self) {
        self.stop("-TERM");
        self.start_again();
    }

    pub fn kill9(&mut self) {
        self.stop("-KILL");
    }

    fn stop(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop("-KILL");
    }
}

impl ControlPlane {
    pub fn token_file(&self) -> std::path::PathBuf {
        self.data_dir.path().join("api-token")
    }

    /// The CA the API's certificate chains to.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.data_dir.path().join("ca.pem")
    }

    /// A join token for `network` in `role` (`node` or `dns`).
    pub fn join_token(&self, network: &str, role: &str) -> String {
        let out = trellis(self, &["network", "join-token", network, "--role", role]);
        assert!(
            out.status.success(),
            "join token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// An API client of `cp` with its admin token.
pub fn client(cp: &ControlPlane) -> trellis_api::client::Client {
    client_at(cp, &cp.url)
}

/// An API client with `cp`'s CA and admin token, of the replicas at `urls`
/// (comma-separated).
pub fn client_at(cp: &ControlPlane, urls: &str) -> trellis_api::client::Client {
    use trellis_api::client::{Client, Credential, Trust};
    let ca = std::fs::read_to_string(cp.ca_file()).expect("the CA");
    let token = std::fs::read_to_string(cp.token_file()).expect("the API token");
    Client::new(
        urls,
        Trust::from_pem(&ca).expect("a CA"),
        Credential::Token(token.trim().into()),
        Duration::from_secs(10),
    )
    .expect("a client")
}

/// A client of `cp` that shows a node certificate of `network`, got with
/// a join token and kept in `dir`: what a node's watch uses.
pub async fn node_client(
    cp: &ControlPlane,
    network: &str,
    dir: &std::path::Path,
) -> trellis_api::client::Client {
    use trellis_api::client::{Client, Credential, Trust};
    let ca =
        Trust::from_pem(&std::fs::read_to_string(cp.ca_file()).expect("the CA")).expect("a CA");
    let token =
        trellis_api::pki::JoinSecret::parse(&cp.join_token(network, "node")).expect("a join token");
    let enroll = Client::new(
        &cp.url,
        ca.clone(),
        Credential::None,
        Duration::from_secs(10),
    )
    .expect("a client");
    let identity = trellis_api::identity::Identity::enroll(
        &enroll,
        trellis_api::pki::Role::Node,
        network,
        dir,
        Some(&token.secret),
    )
    .await
    .expect("a node certificate");
    Client::new(&cp.url, ca, identity.credential(), Duration::from_secs(10)).expect("a client")
}

/// curl that trusts `cp`'s CA and nothing else, with no credential.
pub fn curl_anonymous(cp: &ControlPlane, args: &[&str]) -> Output {
    let ca = cp.ca_file();
    run(
        "curl",
        &[&["--cacert", ca.to_str().unwrap()], args].concat(),
    )
}

/// curl with the API token of `cp`.
pub fn curl(cp: &ControlPlane, args: &[&str]) -> Output {
    let token = std::fs::read_to_string(cp.token_file()).expect("the API token");
    let auth = format!("authorization: Bearer {}", token.trim());
    curl_anonymous(cp, &[&["-H", auth.as_str()], args].concat())
}

fn command(cp: &ControlPlane, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("TRELLIS_SERVER", &cp.url)
        .env("TRELLIS_TOKEN_FILE", cp.token_file())
        .env("TRELLIS_CA_FILE", cp.ca_file())
        .env_remove("TRELLIS_TOKEN")
        .env("TRELLIS_LOG", "warn");
    c
}

/// Runs the CLI against `cp`.
pub fn trellis(cp: &ControlPlane, args: &[&str]) -> Output {
    command(cp, args).output().expect("run trellis")
}

pub fn trellis_env(cp: &ControlPlane, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = command(cp, args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run trellis")
}

pub fn spawn_trellis(cp: &ControlPlane, args: &[&str]) -> Child {
    command(cp, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn trellis")
}

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed by this test (see README setup): {e}"))
}

/// A data dir as `trellis node` and `trellis dns` want it: open to its
/// owner only.
pub fn private_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// Documents of a YAML text, through the real front end.
pub fn documents(text: &str) -> Vec<serde_json::Value> {
    trellis_api::manifest::parse("test.yaml", text)
        .expect("valid YAML")
        .into_iter()
        .map(|d| d.value)
        .collect()
}

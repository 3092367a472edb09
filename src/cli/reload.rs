//! How a running daemon is replaced without refusing a connection. A new
//! process started with the same data dir takes the listeners over
//! (`trellis_api::handover`); SIGHUP makes the running daemon start that
//! process itself, from the binary path it was started from (an upgrade
//! replaces that file first), which is how systemd's `ExecReload=` asks for
//! it. Under systemd (`Type=notify`, `NotifyAccess=all`) each process says
//! `READY=1` with its own `MAINPID` once it accepts, so the unit follows the
//! new process while the old one drains and exits.

use anyhow::{Context, Result};
use sd_notify::NotifyState;
use std::path::PathBuf;
use tokio::signal::unix::{SignalKind, signal};

/// Starts this process's successor on SIGHUP.
pub struct Successor {
    exe: PathBuf,
    hangup: tokio::signal::unix::Signal,
}

impl Successor {
    /// Call at start: the binary's path is read now (after an upgrade
    /// replaced the file, the running image's path says "(deleted)"), and
    /// SIGHUP is handled from here on instead of ending the process.
    pub fn new() -> Result<Successor> {
        Ok(Successor {
            exe: std::env::current_exe().context("the path of this binary")?,
            hangup: signal(SignalKind::hangup()).context("handling SIGHUP")?,
        })
    }

    /// On each SIGHUP, starts the binary again with this process's
    /// arguments. It takes the listeners over, and this process learns of
    /// it from its handover offer; a successor that fails (a bad flag, a
    /// broken upgrade) is logged and this process serves on. Never returns.
    pub async fn on_hangup(&mut self) {
        loop {
            self.hangup.recv().await;
            let child = tokio::process::Command::new(&self.exe)
                .args(std::env::args_os().skip(1))
                .spawn();
            match child {
                Ok(mut child) => {
                    tracing::info!(exe = %self.exe.display(), pid = child.id(), "SIGHUP: started the successor; it takes the listeners over");
                    tokio::spawn(async move {
                        if let Ok(status) = child.wait().await {
                            tracing::warn!(%status, "the successor exited; still serving");
                        }
                    });
                }
                Err(e) => {
                    tracing::error!(exe = %self.exe.display(), error = %e, "SIGHUP: cannot start the successor; still serving");
                }
            }
        }
    }
}

/// Tells systemd (when it runs us with `NOTIFY_SOCKET`) that this process
/// accepts, and is the unit's main process from now on.
pub fn ready() {
    let states = [NotifyState::Ready, NotifyState::MainPid(std::process::id())];
    if let Err(e) = sd_notify::notify(&states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Tells systemd this process stops (not said by a process that was
/// replaced: the unit goes on in its successor).
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

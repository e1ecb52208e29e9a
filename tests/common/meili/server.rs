//! Meilisearch servers of a test's own, and where the binary is.
//!
//! # Layout
//! - [`meilisearch_binary`]: the lookup `scripts/lib.sh` does too (`meilisearch_bin`).
//! - [`PrivateMeilisearch`]: start, kill -9, restart, pause, resume; a scenario `Dependency`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::{LOCAL_MASTER_KEY, Meili};

/// The Meilisearch server binary, looked up as `scripts/lib.sh` does: `MEILISEARCH_BIN` (which
/// must then be executable), `meilisearch` on `PATH`, `../shared/bin/meilisearch` beside the
/// repository (beside this checkout, and beside the main checkout when this is a linked git
/// worktree), then the copy `scripts/install.sh` downloaded into `$CDC_STATE_DIR/bin` (default
/// `/var/tmp/bangumi-cdc`).
pub fn meilisearch_binary() -> anyhow::Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("MEILISEARCH_BIN") {
        let path = PathBuf::from(explicit);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!(
            "MEILISEARCH_BIN={} is not an executable file",
            path.display()
        );
    }
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|dir| dir.join("meilisearch"))
                .collect()
        })
        .unwrap_or_default();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests/ has no parent")?
        .to_owned();
    let shared = std::iter::once(repo.clone())
        .chain(main_checkout(&repo))
        .map(|checkout| checkout.join("../shared/bin/meilisearch"));
    let state = std::env::var_os("CDC_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/bangumi-cdc"));
    on_path
        .into_iter()
        .chain(shared)
        .chain([state.join("bin/meilisearch")])
        .find(|p| is_executable(p))
        .with_context(|| {
            format!(
                "no Meilisearch server binary: set MEILISEARCH_BIN to one, put `meilisearch` on \
                 PATH, or place it at {} (../shared/bin beside the repository); with internet, \
                 scripts/install.sh downloads one",
                repo.join("../shared/bin/meilisearch").display()
            )
        })
}

/// The main checkout of the repository when `checkout` is a linked git worktree (its `.git` is a
/// file pointing into the main checkout's `.git/worktrees/`).
fn main_checkout(checkout: &Path) -> Option<PathBuf> {
    let pointer = std::fs::read_to_string(checkout.join(".git")).ok()?;
    let gitdir = PathBuf::from(pointer.strip_prefix("gitdir:")?.trim());
    let worktrees = gitdir.parent()?;
    let common = worktrees.parent()?;
    (worktrees.file_name()? == "worktrees" && common.file_name()? == ".git")
        .then(|| common.parent().map(Path::to_owned))
        .flatten()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A Meilisearch server of the test's own: its own data dir (in the temporary directory) and a
/// free port, the binary [`meilisearch_binary`] finds, key [`LOCAL_MASTER_KEY`]. A test kills it
/// ([`PrivateMeilisearch::stop`]) and restarts it on the same port and data, or freezes it
/// ([`PrivateMeilisearch::pause`]). Killed, and its data dir removed, when dropped.
pub struct PrivateMeilisearch {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl PrivateMeilisearch {
    /// Starts one on a free port and waits until it is available.
    pub async fn start() -> anyhow::Result<Self> {
        let binary = meilisearch_binary()?;
        let port = crate::process::free_port()?;
        let dir = std::env::temp_dir().join(format!("cdc-meilisearch-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            port,
            dir,
            binary,
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client of it.
    pub fn client(&self) -> anyhow::Result<Meili> {
        Meili::new(&self.url(), LOCAL_MASTER_KEY)
    }

    /// Its working directory: the database (`data.ms`), dumps, snapshots and its log (`log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts it (again, after [`PrivateMeilisearch::stop`]) on the same port with the data it
    /// had, and waits until `GET /health` answers `available`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("private Meilisearch on {} is already running", self.port);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))?;
        let child = Command::new(&self.binary)
            .current_dir(&self.dir)
            .arg("--db-path")
            .arg(self.dir.join("data.ms"))
            .args(["--http-addr", &format!("127.0.0.1:{}", self.port)])
            .args(["--env", "development", "--no-analytics"])
            .env("MEILI_MASTER_KEY", LOCAL_MASTER_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let probe = self.client()?.with_timeout(Duration::from_secs(1))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while probe.require().await.is_err() {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                let _ = self.stop().await;
                let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                bail!(
                    "private Meilisearch did not become available on {} ({exited:?}):\n{log}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kills it (SIGKILL, as in a crash; a paused server too); data stays on disk.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Freezes it (SIGSTOP): connections are accepted by the kernel but nothing is answered.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        crate::process::signal(self.running()?, "STOP")
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&mut self) -> anyhow::Result<()> {
        crate::process::signal(self.running()?, "CONT")
    }

    fn running(&self) -> anyhow::Result<&Child> {
        self.child
            .as_ref()
            .with_context(|| format!("private Meilisearch on {} is stopped", self.port))
    }
}

impl crate::scenario::Dependency for PrivateMeilisearch {
    const NAME: &'static str = "Meilisearch";
    fn stop(&mut self) -> impl Future<Output = anyhow::Result<()>> {
        PrivateMeilisearch::stop(self)
    }
    fn restart(&mut self) -> impl Future<Output = anyhow::Result<()>> {
        PrivateMeilisearch::restart(self)
    }
}

impl Drop for PrivateMeilisearch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

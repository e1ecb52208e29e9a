//! Real processes the fault scenarios start, stop and kill: worker binaries and a private Redis.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// The path of a workspace binary (built by `cargo build --bins`, which `make test` runs first).
pub fn worker_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test binary has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not built; run `cargo build --workspace --bins` (make test does)",
            path.display()
        );
    }
    Ok(path)
}

/// The worker binary of `family` configured the way tests run it: its topics, group, Redis and
/// key prefix; fast commits and group joins (tansu); one record per producer batch (tansu's
/// end offsets); text logs; output discarded.
pub fn worker_command(
    family: &str,
    topic_prefix: &str,
    group: &str,
    redis_uri: &str,
    key_prefix: &str,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(worker_binary(family)?);
    cmd.env("KAFKA_BROKERS", crate::brokers())
        .env("KAFKA_CONFIG__BATCH_NUM_MESSAGES", "1")
        .env("KAFKA_TOPIC_PREFIX", topic_prefix)
        .env("KAFKA_GROUP_ID", group)
        .env("REDIS_URI", redis_uri)
        .env("REDIS_KEY_PREFIX", key_prefix)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("COMMIT_INTERVAL", "100ms")
        .env("KAFKA_CONFIG__SESSION_TIMEOUT_MS", "2000")
        .env("KAFKA_CONFIG__HEARTBEAT_INTERVAL_MS", "500")
        .env("LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(cmd)
}

/// Where the `dlq` tool runs in a test: a family's topics, group,
/// Redis and key prefix, its schema registry, an audit log at `audit`; text logs, warnings only.
pub struct DlqLane<'a> {
    pub topic_prefix: &'a str,
    pub group: &'a str,
    pub redis_uri: &'a str,
    pub key_prefix: &'a str,
    pub registry_url: &'a str,
    pub audit: &'a std::path::Path,
}

/// The `dlq` tool with `args`, configured for `lane` (see [`DlqLane`]).
pub fn dlq_command(args: &[&str], lane: &DlqLane) -> anyhow::Result<Command> {
    let mut cmd = Command::new(worker_binary("dlq")?);
    cmd.args(args)
        .env("KAFKA_BROKERS", crate::brokers())
        .env("KAFKA_CONFIG__BATCH_NUM_MESSAGES", "1")
        .env("KAFKA_TOPIC_PREFIX", lane.topic_prefix)
        .env("KAFKA_GROUP_ID", lane.group)
        .env("REDIS_URI", lane.redis_uri)
        .env("REDIS_KEY_PREFIX", lane.key_prefix)
        .env("SCHEMA_REGISTRY_URL", lane.registry_url)
        .env("DLQ_AUDIT_LOG", lane.audit)
        .env("DLQ_REASON", "integration test")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn");
    Ok(cmd)
}

/// Runs `cmd` (the `dlq` tool with `args`) to completion and echoes what it printed, for the
/// test's output.
pub fn dlq_output(mut cmd: Command, args: &[&str]) -> std::process::Output {
    let out = cmd.output().expect("run dlq");
    eprintln!(
        "$ dlq {}\n{}{}exit {:?}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

/// A process's output captured in a file of its own, read back while it grows: tests that
/// check what a worker logs (fields, what must never be there) give it this as stderr.
pub struct LogFile {
    path: PathBuf,
}

impl LogFile {
    /// An empty file in the temporary directory, removed when dropped.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("{}.log", crate::unique(name)));
        std::fs::File::create(&path)?;
        Ok(Self { path })
    }

    /// The file as a child's stdout or stderr (appended to).
    pub fn stdio(&self) -> anyhow::Result<Stdio> {
        Ok(std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)?
            .into())
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        std::fs::read(&self.path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The JSON log lines written so far (`LOG_FORMAT=json`), other lines left out.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits up to `within` for a JSON log line whose `message` is `message`; the first.
    pub async fn wait_for_message(&self, message: &str, within: Duration) -> serde_json::Value {
        let mut found = None;
        crate::scenario::wait_for(&format!("log line {message:?}"), within, async || {
            found = self
                .json_lines()
                .into_iter()
                .find(|line| line["message"] == message);
            found.is_some()
        })
        .await;
        found.unwrap_or_default()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A local port nothing listens on (bound, then released): for a server of the test's own, or
/// a dependency that refuses connections.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Sends `signal` (e.g. "TERM", "KILL") to `child`.
pub fn signal(child: &Child, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{signal} {} failed", child.id());
    }
    Ok(())
}

/// Waits up to `within` for `child` to exit; `None` if it did not.
pub async fn wait_exit(
    child: &mut Child,
    within: Duration,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Redis server of the test's own (its own port and data dir, append-only file on), so a
/// test can stop and restart it without touching the machine's Redis.
pub struct PrivateRedis {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("cdc-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:{port}/0`.
    pub fn uri(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its working directory, where it writes its snapshots.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Starts it again (after [`PrivateRedis::stop`]), with the data it had.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                bail!("private redis-server did not start on {}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Shuts it down (data kept on disk).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .output();
        if let Some(mut child) = self.child.take()
            && wait_exit(&mut child, Duration::from_secs(10))
                .await?
                .is_none()
        {
            let _ = child.kill();
        }
        Ok(())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The schema-registry stand-in (`fixtures/registry_stand_in.py`) on a port of the test's own,
/// so a test can run it empty, then "fix" it by restarting it with the schemas.
pub struct PrivateRegistry {
    /// Its port.
    pub port: u16,
    child: Child,
}

impl PrivateRegistry {
    /// Starts one serving the schemas of `fixtures/debezium/registry.json`, or none.
    pub async fn start(with_schemas: bool) -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Self::spawn(port, with_schemas).await?;
        Ok(Self { port, child })
    }

    async fn spawn(port: u16, with_schemas: bool) -> anyhow::Result<Child> {
        let fixtures = crate::fixtures::dir();
        let schemas = if with_schemas {
            fixtures.join("debezium/registry.json")
        } else {
            PathBuf::from("/nonexistent/registry.json")
        };
        let child = Command::new("python3")
            .arg(fixtures.join("registry_stand_in.py"))
            .args(["--port", &port.to_string()])
            .arg("--schemas")
            .arg(schemas)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the registry stand-in")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                bail!("registry stand-in did not start on {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(child)
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Restarts it on the same port, with or without the schemas.
    pub async fn restart(&mut self, with_schemas: bool) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, with_schemas).await?;
        Ok(())
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl KillOnDrop {
    /// Stops the process as its orchestrator would: SIGTERM, then its exit within 20 s.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        signal(&self.0, "TERM")?;
        wait_exit(&mut self.0, Duration::from_secs(20))
            .await?
            .context("not exited within 20 s of SIGTERM")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

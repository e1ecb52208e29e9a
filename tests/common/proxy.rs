//! A broker "restart" the broker's data survives: a private tansu broker (memory storage, its
//! own port) advertised through a TCP proxy of the harness. Every client (workers, the harness)
//! connects to the proxy; [`BrokerProxy::down`] resets every connection and closes the port
//! (connections refused), which is what clients see while a broker restarts, and
//! [`BrokerProxy::up`] opens it again. tansu's memory storage cannot survive a real restart, so
//! the broker process itself keeps running: its log and group state survive, as a real
//! broker's would on disk.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy from `127.0.0.1:{port}` to `target` that can be taken down and brought back.
pub struct BrokerProxy {
    /// The port clients connect to.
    pub port: u16,
    target: String,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl BrokerProxy {
    /// Listens on `port` (0: any free port) and forwards to `target`.
    pub async fn start(port: u16, target: &str) -> anyhow::Result<Self> {
        let mut proxy = Self {
            port,
            target: target.to_owned(),
            accept: None,
            connections: Arc::default(),
        };
        proxy.up().await?;
        Ok(proxy)
    }

    /// `127.0.0.1:{port}`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Opens the port again (same port) and forwards new connections.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        if self.accept.is_some() {
            return Ok(());
        }
        // tokio sets SO_REUSEADDR: the port is free again at once after `down`.
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("proxy port {}", self.port))?;
        self.port = listener.local_addr()?.port();
        let target = self.target.clone();
        let connections = self.connections.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut open = connections.lock().expect("lock");
                open.retain(|t| !t.is_finished());
                open.push(task);
            }
        }));
        Ok(())
    }

    /// Closes the port and drops every open connection.
    pub async fn down(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        let open: Vec<JoinHandle<()>> = self.connections.lock().expect("lock").drain(..).collect();
        for task in open {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

/// A tansu broker of the test's own (memory storage, its own port and working directory),
/// reached only through a [`BrokerProxy`] it advertises. Killed when dropped.
pub struct PrivateBroker {
    /// The proxy every client uses.
    pub proxy: BrokerProxy,
    child: Child,
    dir: PathBuf,
}

impl PrivateBroker {
    /// Starts tansu on a free port, advertising the proxy's port, and the proxy.
    pub async fn start() -> anyhow::Result<Self> {
        let broker_port = crate::process::free_port()?;
        let proxy_port = crate::process::free_port()?;
        // Where scripts/install.sh puts it (scripts/lib.sh: `$CDC_STATE_DIR/bin`).
        let state =
            std::env::var("CDC_STATE_DIR").unwrap_or_else(|_| "/var/tmp/bangumi-cdc".into());
        let binary = std::env::var("TANSU_BIN").unwrap_or_else(|_| format!("{state}/bin/tansu"));
        // tansu reads any ./.env in its working directory: give it an empty one of its own.
        let dir = std::env::temp_dir().join(format!("cdc-tansu-{broker_port}"));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(&binary)
            .current_dir(&dir)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{broker_port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{proxy_port}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary} (scripts/install.sh installs it)"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", broker_port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                bail!("private tansu did not start on {broker_port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let proxy = BrokerProxy::start(proxy_port, &format!("127.0.0.1:{broker_port}")).await?;
        Ok(Self { proxy, child, dir })
    }

    /// The bootstrap address clients use (the proxy).
    pub fn addr(&self) -> String {
        self.proxy.addr()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A real ZooKeeper server for integration tests (Debian package `zookeeper`, run straight from
//! its jar with Java): standalone, on 127.0.0.1 with a free port and a temporary data directory,
//! short ticks so that short session timeouts are allowed; killed and cleaned up on drop. Also a
//! loopback TCP relay in front of it that a test can cut, to partition a client from ZooKeeper.
// Each test binary uses a part of these helpers.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use zookeeper_client as zk;

/// The server's jar: `$MESHWORK_ZOOKEEPER_JAR` or the Debian package's.
fn zookeeper_jar() -> PathBuf {
    let jar = std::env::var_os("MESHWORK_ZOOKEEPER_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java/zookeeper.jar"));
    assert!(
        jar.exists(),
        "{} not found: run `bash scripts/install-deps.sh` (Debian package `zookeeper`) to install ZooKeeper",
        jar.display()
    );
    jar
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// ZooKeeper's tick: sessions may be as short as two ticks.
pub const TICK: Duration = Duration::from_millis(200);

/// One standalone ZooKeeper server, owned by one test.
pub struct ZkServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl ZkServer {
    /// Starts a fresh server and waits until it answers.
    pub async fn start() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meshwork-zk-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("create the ZooKeeper temp dir");
        let port = free_port();
        let config = format!(
            "tickTime={}\nminSessionTimeout={}\nmaxSessionTimeout=30000\ndataDir={}\n\
             clientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
             forceSync=no\n4lw.commands.whitelist=ruok\n",
            TICK.as_millis(),
            2 * TICK.as_millis(),
            dir.join("data").display()
        );
        std::fs::write(dir.join("zoo.cfg"), config).expect("write zoo.cfg");
        let mut server = Self {
            child: None,
            dir,
            port,
        };
        server.spawn().await;
        server
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// An ensemble of this server, with the given session timeout.
    pub fn ensemble(&self, session_timeout: Duration) -> meshwork::discover::zookeeper::Ensemble {
        ensemble_at(self.addr(), session_timeout)
    }

    /// A plain client, for the test's own reads and writes.
    pub async fn client(&self) -> zk::Client {
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&self.addr().to_string())
            .await
            .expect("connect to the test ZooKeeper")
    }

    /// Kills the server (like a crash), keeping its data directory.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data, and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    async fn spawn(&mut self) {
        let mut classpath = zookeeper_jar().display().to_string();
        // Log through slf4j-simple when it is there (warnings only); otherwise slf4j stays silent.
        if Path::new("/usr/share/java/slf4j-simple.jar").exists() {
            classpath.push_str(":/usr/share/java/slf4j-simple.jar");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the ZooKeeper log");
        let child = Command::new("java")
            .args([
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Xshare:auto",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp",
                &classpath,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn java (ZooKeeper)");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "ZooKeeper exited with {status}; log:\n{}",
                    read_log(&self.log_path())
                );
            }
            if ruok(self.addr()).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ZooKeeper did not answer within 20 s; log:\n{}",
                read_log(&self.log_path())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An ensemble of one server at `addr`, quick to give up on a connection attempt.
pub fn ensemble_at(
    addr: SocketAddr,
    session_timeout: Duration,
) -> meshwork::discover::zookeeper::Ensemble {
    meshwork::discover::zookeeper::Ensemble::new([addr.to_string()])
        .unwrap()
        .session_timeout(session_timeout)
        .connect_timeout(Duration::from_secs(2))
}

/// ZooKeeper's `ruok` four-letter word: `imok` when it serves.
async fn ruok(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"ruok").await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf == b"imok")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(true))
    )
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback TCP relay to a server: clients connect to [`addr`](Self::addr); [`cut`](Self::cut)
/// drops every relayed connection and refuses new ones (a network partition) until
/// [`heal`](Self::heal).
pub struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    pub async fn to(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let cut = cut.clone();
            let conns = conns.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap().push(task);
                }
            }
        });
        Self {
            addr,
            cut,
            conns,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Partitions: every relayed connection is dropped, new ones are closed at once.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Ends the partition.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

//! A private dnsmasq on 127.0.0.1 for the DNS discovery tests.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A dnsmasq serving the hosts files in its own directory (re-read live via `hostsdir`) with a
/// 1-second TTL, answering NXDOMAIN for unknown names under `.test`. Killed on drop.
pub struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    conf: PathBuf,
    dir: TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq with `extra` config lines (for example `srv-host=...`).
    pub fn start(extra: &[&str]) -> Self {
        assert!(
            Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: run scripts/install-deps.sh to install dnsmasq"
        );
        let dir = TempDir::new("dnsmasq");
        let hosts = dir.path().join("hosts");
        std::fs::create_dir_all(&hosts).unwrap();
        for _ in 0..20 {
            let port = free_port();
            let conf = dir.path().join("dnsmasq.conf");
            let mut lines = vec![
                format!("port={port}"),
                "listen-address=127.0.0.1".into(),
                "bind-interfaces".into(),
                "no-resolv".into(),
                "no-hosts".into(),
                "no-negcache".into(),
                "local-ttl=1".into(),
                "local=/test/".into(),
                format!("hostsdir={}", hosts.display()),
                "keep-in-foreground".into(),
                "pid-file=".into(),
                "user=root".into(),
                format!("log-facility={}", dir.path().join("log").display()),
                "log-queries".into(),
            ];
            lines.extend(extra.iter().map(|s| s.to_string()));
            std::fs::write(&conf, lines.join("\n") + "\n").unwrap();
            let mut child = spawn(&conf);
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            if wait_listening(&mut child, addr) {
                return Self {
                    child,
                    addr,
                    conf,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "dnsmasq did not start (see its log under {})",
            dir.path().display()
        );
    }

    /// The address it serves on (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the hosts file (`ip name` lines) atomically; dnsmasq re-reads it at once.
    pub fn set_hosts(&self, lines: &[(&str, &str)]) {
        let text: String = lines
            .iter()
            .map(|(ip, name)| format!("{ip} {name}\n"))
            .collect();
        let dir = self.dir.path().join("hosts");
        let tmp = self.dir.path().join("hosts.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join("hosts")).unwrap();
        // dnsmasq notices hostsdir changes by inotify when it next handles a packet or ticks; give
        // it a moment of real time.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// The log, for debugging failures.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// Starts the server again on the same port, with the current hosts file.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.conf);
        assert!(
            wait_listening(&mut self.child, self.addr),
            "dnsmasq did not restart on {}",
            self.addr
        );
    }

    /// Stops the server (the port then refuses queries).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(conf: &Path) -> Child {
    Command::new(DNSMASQ)
        .arg(format!("--conf-file={}", conf.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq starts")
}

/// A port free for both UDP and TCP on 127.0.0.1 right now (not 5353).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if port == 5353 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until dnsmasq accepts TCP connections, or reports that it exited.
fn wait_listening(child: &mut Child, addr: SocketAddr) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

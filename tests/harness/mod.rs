//! Test support: real `titanstore-server` processes on loopback, and a
//! line-protocol client. Every process is killed when the cluster is dropped,
//! also when a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_titanstore-node");

/// A free loopback port below Linux's ephemeral range (32768+), so an
/// outgoing connection cannot take it between this check and the node's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 600) * 20;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (base - 20_000 + n) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

/// `GET path` over HTTP/1.0 on loopback: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct TestNode {
    pub id: String,
    pub raft_port: u16,
    pub client_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Serves `/metrics` and `/health` here (`--metrics-addr`), when set.
    pub metrics_port: Option<u16>,
    /// Started with `--join <these client addrs>` instead of `--peers`.
    pub join: Option<Vec<String>>,
    child: Option<Child>,
}

impl TestNode {
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    pub extra_args: Vec<String>,
    /// Per node: used instead of `extra_args` (set before a restart).
    pub node_args: std::collections::HashMap<String, Vec<String>>,
    /// Runs each node through this command (e.g. `prlimit --nofile=...`).
    pub wrapper: Vec<String>,
    expect_exit: bool,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    pub fn launch(n: usize, extra_args: &[&str]) -> TestCluster {
        TestCluster::launch_with(n, extra_args, false)
    }

    /// Like [`TestCluster::launch`], every node also serving `--metrics-addr`.
    pub fn launch_with_metrics(n: usize, extra_args: &[&str]) -> TestCluster {
        TestCluster::launch_with(n, extra_args, true)
    }

    /// Like [`TestCluster::launch`], each node started through `wrapper`.
    pub fn launch_wrapped(n: usize, extra_args: &[&str], wrapper: &[&str]) -> TestCluster {
        TestCluster::launch_full(n, extra_args, false, wrapper)
    }

    fn launch_with(n: usize, extra_args: &[&str], metrics: bool) -> TestCluster {
        TestCluster::launch_full(n, extra_args, metrics, &[])
    }

    fn launch_full(n: usize, extra_args: &[&str], metrics: bool, wrapper: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes = (1..=n)
            .map(|i| TestNode {
                id: format!("node{i}"),
                raft_port: free_port(),
                client_port: free_port(),
                data_dir: dir.path().join(format!("node{i}")),
                log_path: dir.path().join(format!("node{i}.log")),
                metrics_port: metrics.then(free_port),
                join: None,
                child: None,
            })
            .collect();
        let mut cluster = TestCluster {
            nodes,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            node_args: std::collections::HashMap::new(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            expect_exit: false,
            _dir: dir,
        };
        for i in 0..n {
            cluster.start_node(i);
        }
        cluster
    }

    fn index(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    /// Some node other than `id` (e.g. a follower of the leader `id`).
    pub fn other_than(&self, id: &str) -> String {
        self.nodes
            .iter()
            .find(|n| n.id != id)
            .expect("a cluster of more than one node")
            .id
            .clone()
    }

    pub fn node(&self, id: &str) -> &TestNode {
        &self.nodes[self.index(id)]
    }

    /// Starts a new node with `--join` (the client addresses of the nodes
    /// running now) and returns its id; it is added to the cluster by itself.
    pub fn add_joining(&mut self, id: &str) -> String {
        let join: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.client_addr())
            .collect();
        let dir = self._dir.path();
        self.nodes.push(TestNode {
            id: id.to_string(),
            raft_port: free_port(),
            client_port: free_port(),
            data_dir: dir.join(id),
            log_path: dir.join(format!("{id}.log")),
            metrics_port: None,
            join: Some(join),
            child: None,
        });
        let i = self.nodes.len() - 1;
        self.start_node(i);
        id.to_string()
    }

    /// The node starts again with `--join` (e.g. after its disk was replaced).
    pub fn rejoin(&mut self, id: &str) {
        let i = self.index(id);
        let join: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running() && n.id != id)
            .map(|n| n.client_addr())
            .collect();
        self.nodes[i].join = Some(join);
        self.start_node(i);
    }

    fn start_node(&mut self, i: usize) {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.id != self.nodes[i].id && n.join.is_none())
            .map(|n| format!("{}:127.0.0.1:{}:{}", n.id, n.raft_port, n.client_port))
            .collect();
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .unwrap();
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.arg("--id")
            .arg(&node.id)
            .arg("--port")
            .arg(node.raft_port.to_string())
            .arg("--client-port")
            .arg(node.client_port.to_string())
            .arg("--advertise-client-addr")
            .arg(node.client_addr())
            .arg("--advertise-raft-addr")
            .arg(format!("127.0.0.1:{}", node.raft_port))
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(self.node_args.get(&node.id).unwrap_or(&self.extra_args))
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(port) = node.metrics_port {
            cmd.arg("--metrics-addr").arg(format!("127.0.0.1:{port}"));
        }
        if let Some(join) = &node.join {
            cmd.arg("--join").arg(join.join(","));
        } else if !peers.is_empty() {
            cmd.arg("--peers").arg(peers.join(","));
        }
        let child = cmd.spawn().unwrap();
        self.nodes[i].child = Some(child);
        if !self.expect_exit {
            let addr = self.nodes[i].client_addr();
            wait_for("node to accept clients", Duration::from_secs(10), || {
                TcpStream::connect(&addr).ok()
            });
        }
    }

    /// Starts `id` without waiting for it to serve: it is expected to exit.
    pub fn start_expecting_exit(&mut self, id: &str) {
        let i = self.index(id);
        self.expect_exit = true;
        self.start_node(i);
        self.expect_exit = false;
    }

    pub fn start(&mut self, id: &str) {
        let i = self.index(id);
        assert!(self.nodes[i].child.is_none(), "{id} is running");
        self.start_node(i);
    }

    /// Waits until `id`'s process exits on its own; its exit code.
    pub fn wait_exit(&mut self, id: &str, timeout: Duration) -> Option<i32> {
        let i = self.index(id);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.nodes[i].child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i].child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, id: &str) {
        let i = self.index(id);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs every node, then starts them all again from their data dirs.
    pub fn kill_and_restart_all(&mut self) {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for id in &ids {
            self.kill(id);
        }
        for id in &ids {
            self.start(id);
        }
    }

    fn signal(&self, id: &str, sig: &str) {
        let child = self.nodes[self.index(id)]
            .child
            .as_ref()
            .expect("node running");
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self, id: &str) -> Option<i32> {
        self.signal(id, "TERM");
        let i = self.index(id);
        let mut child = self.nodes[i].child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{id} did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pause(&self, id: &str) {
        self.signal(id, "STOP");
    }

    pub fn resume(&self, id: &str) {
        self.signal(id, "CONT");
    }

    pub fn client(&self, id: &str) -> LineClient {
        LineClient::connect(&self.node(id).client_addr())
    }

    pub fn status(&self, id: &str) -> Option<Status> {
        let node = self.node(id);
        if !node.is_running() {
            return None;
        }
        let mut client = LineClient::try_connect(&node.client_addr())?;
        let line = client.try_cmd("STATUS")?;
        Status::parse(&line)
    }

    /// Waits until one running node is leader and every other running node
    /// follows it; returns its id.
    /// The id of a node other than `old` that says it leads (the cluster
    /// replaced `old`, e.g. while it was paused).
    pub fn wait_for_leader_other_than(&self, old: &str, timeout: Duration) -> String {
        wait_for("a new leader among the others", timeout, || {
            self.nodes
                .iter()
                .filter(|n| n.id != old)
                .find(|n| self.status(&n.id).is_some_and(|s| s.role == "leader"))
                .map(|n| n.id.clone())
        })
    }

    pub fn wait_for_leader(&self, timeout: Duration) -> String {
        wait_for("a leader all running nodes agree on", timeout, || {
            let statuses: Vec<Status> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| self.status(&n.id))
                .collect::<Option<_>>()?;
            let leader = statuses.iter().find(|s| s.role == "leader")?;
            statuses
                .iter()
                .all(|s| s.leader == leader.id && s.term == leader.term)
                .then(|| leader.id.clone())
        })
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} ---\n{}",
                    n.id,
                    std::fs::read_to_string(&n.log_path).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                // A paused node must be resumed to die promptly from SIGKILL? No:
                // SIGKILL works on stopped processes too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Fields of a `STATUS` reply.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: String,
    pub role: String,
    pub term: u64,
    pub leader: String,
    pub commit: u64,
    pub applied: u64,
    pub snapshot_index: u64,
    /// Every field, as sent.
    pub line: String,
}

impl Status {
    /// Any field by name.
    pub fn field(&self, name: &str) -> Option<String> {
        let rest = self.line.strip_prefix("STATUS ")?;
        rest.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{name}=")).map(str::to_string))
    }

    pub fn parse(line: &str) -> Option<Status> {
        let rest = line.strip_prefix("STATUS ")?;
        let get = |k: &str| {
            rest.split(' ')
                .find_map(|f| f.strip_prefix(&format!("{k}=")).map(str::to_string))
        };
        Some(Status {
            id: get("id")?,
            role: get("role")?,
            term: get("term")?.parse().ok()?,
            leader: get("leader")?,
            commit: get("commit")?.parse().ok()?,
            applied: get("applied")?.parse().ok()?,
            snapshot_index: get("snapshot_index")?.parse().ok()?,
            line: line.to_string(),
        })
    }
}

/// A blocking line-protocol client, as `nc` would be.
pub struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    pub fn connect(addr: &str) -> LineClient {
        Self::try_connect(addr).unwrap_or_else(|| panic!("cannot connect to {addr}"))
    }

    pub fn try_connect(addr: &str) -> Option<LineClient> {
        let stream = TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        Some(LineClient {
            reader: BufReader::new(stream.try_clone().ok()?),
            writer: stream,
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    pub fn read_line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Some(line)
            }
        }
    }

    pub fn try_cmd(&mut self, line: &str) -> Option<String> {
        self.writer.write_all(format!("{line}\n").as_bytes()).ok()?;
        let reply = self.read_line()?;
        Some(String::from_utf8_lossy(&reply).into_owned())
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.try_cmd(line)
            .unwrap_or_else(|| panic!("no reply to {line:?}"))
    }

    /// True when the server closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }
}

/// Sets `key` through whichever node is leader, following redirects.
pub fn set_via_leader(cluster: &TestCluster, key: &str, value: &str) -> String {
    let mut addr = cluster
        .nodes
        .iter()
        .find(|n| n.is_running())
        .unwrap()
        .client_addr();
    for _ in 0..10 {
        let reply = LineClient::connect(&addr).cmd(&format!("SET {key} {value}"));
        match reply.strip_prefix("ERR NOT_LEADER ") {
            Some(leader) => addr = leader.to_string(),
            None => return reply,
        }
    }
    panic!("too many redirects");
}

impl LineClient {
    /// Half-closes the connection, as `nc -N` does at end of input.
    pub fn writer_shutdown(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }
}

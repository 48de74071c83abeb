//! `titanstore-ctl`: the admin command line, shared by the native binary and
//! the Python package (both call [`main_from`]).
//!
//! It speaks the client protocol through the Rust client (redirects
//! followed, retries until `--timeout`). Output is a human table by default
//! and one JSON document with `--json`. Exit codes a script can rely on:
//! 0 done; 1 the cluster refused (an `ERR` reply, a CAS conflict, `check`
//! found no leader); 2 bad usage; 3 no endpoint could be reached.

use std::ffi::OsString;
use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::{Client, ClientError, ClientOptions};
use crate::protocol::{Member, MemberSpec, Reply, Request, Transfer, WatchEvent};

/// Administer a TitanStore cluster.
#[derive(Debug, Parser)]
#[command(name = "titanstore-ctl", version, about)]
pub struct Args {
    /// Client addresses (host:port) of some members, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:6001")]
    pub endpoints: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How long to keep retrying redirects and unreachable nodes, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a key (linearizable).
    Get { key: String },
    /// Write a key.
    Set { key: String, value: String },
    /// Delete a key.
    Del { key: String },
    /// Write a key only if it is at revision EXPECTED (0: only if absent).
    Cas {
        key: String,
        expected: u64,
        value: String,
    },
    /// List keys (all, or with PREFIX) in byte order.
    Scan {
        prefix: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print every change to keys with PREFIX, from revision --from (0: now).
    Watch {
        prefix: Option<String>,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// STATUS of every endpoint, as a table.
    Status,
    /// The members of the cluster.
    Members,
    /// Add, promote or remove a member.
    Member {
        #[command(subcommand)]
        change: MemberCommand,
    },
    /// Move leadership to ID (or to the most caught-up voter).
    Transfer { id: Option<String> },
    /// Health of every endpoint; exit code 1 when the cluster has no leader.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add id:host:raft_port:client_port (as a voter unless --learner).
    Add {
        member: String,
        #[arg(long)]
        learner: bool,
    },
    /// Make a learner a voter.
    Promote { id: String },
    /// Remove a member (also the leader).
    Remove { id: String },
}

/// What a command produced: a table and its JSON form, or a refusal.
enum Outcome {
    Done {
        rows: Vec<Vec<String>>,
        header: Vec<&'static str>,
    },
    Refused(String),
}

/// Runs the command line `args` (program name first). Returns the exit code;
/// never exits the process (so it is safe inside Python).
pub fn main_from<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { 2 } else { 0 };
        }
    };
    let options = ClientOptions {
        timeout: Duration::from_secs_f64(args.timeout.max(0.1)),
        retry_timeout: Duration::from_secs_f64(args.timeout.max(0.0)),
        follow_redirects: true,
    };
    match run(&args, options) {
        Ok(Outcome::Done { rows, header }) => {
            print_rows(&header, &rows, args.json);
            0
        }
        Ok(Outcome::Refused(reason)) => {
            if args.json {
                println!("{}", json_object(&[("error", reason.as_str())]));
            } else {
                eprintln!("titanstore-ctl: {reason}");
            }
            1
        }
        Err(err) => {
            eprintln!("titanstore-ctl: {err}");
            match err {
                ClientError::Connection(_) | ClientError::Timeout(_) | ClientError::NoLeader => 3,
                _ => 1,
            }
        }
    }
}

fn run(args: &Args, options: ClientOptions) -> Result<Outcome, ClientError> {
    let client = || Client::new(args.endpoints.clone(), options.clone());
    let done =
        |header: Vec<&'static str>, rows: Vec<Vec<String>>| Ok(Outcome::Done { rows, header });
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let refused = |result: Result<Outcome, ClientError>| match result {
        Err(ClientError::Server(reason)) => Ok(Outcome::Refused(reason)),
        Err(ClientError::Conflict { current_rev }) => Ok(Outcome::Refused(format!(
            "conflict: the key is at revision {current_rev}"
        ))),
        other => other,
    };
    match &args.command {
        Command::Get { key } => match client()?.get_rev(key.as_bytes())? {
            Some((rev, value)) => done(
                vec!["key", "rev", "value"],
                vec![vec![key.clone(), rev.to_string(), text(&value)]],
            ),
            None => Ok(Outcome::Refused(format!("{key}: not found"))),
        },
        Command::Set { key, value } => refused(
            client()?
                .set(key.as_bytes(), value.as_bytes())
                .and_then(|()| done(vec!["result"], vec![vec!["OK".into()]])),
        ),
        Command::Del { key } => refused(
            client()?
                .delete(key.as_bytes())
                .and_then(|()| done(vec!["result"], vec![vec!["OK".into()]])),
        ),
        Command::Cas {
            key,
            expected,
            value,
        } => refused(
            client()?
                .cas(key.as_bytes(), value.as_bytes(), *expected)
                .and_then(|rev| {
                    done(
                        vec!["result", "rev"],
                        vec![vec!["OK".into(), rev.to_string()]],
                    )
                }),
        ),
        Command::Scan { prefix, limit } => {
            let items = client()?.scan(
                prefix.as_deref().map(str::as_bytes),
                (*limit).clamp(1, 10_000),
            )?;
            let rows = items
                .iter()
                .take(*limit)
                .map(|(k, rev, v)| vec![text(k), rev.to_string(), text(v)])
                .collect();
            done(vec!["key", "rev", "value"], rows)
        }
        Command::Watch {
            prefix,
            from,
            count,
        } => {
            let c = client()?;
            let mut stream = c.watch(prefix.as_deref().map(str::as_bytes), *from);
            let mut seen = 0;
            loop {
                if count.is_some_and(|n| seen >= n) {
                    return done(vec![], vec![]);
                }
                if let WatchEvent::Change { rev, key, value } = stream.next_event()? {
                    seen += 1;
                    let (op, v) = match &value {
                        Some(v) => ("SET", text(v)),
                        None => ("DEL", String::new()),
                    };
                    let row = vec![rev.to_string(), op.to_string(), text(&key), v];
                    print_rows(&["rev", "op", "key", "value"], &[row], args.json);
                    let _ = std::io::stdout().flush();
                }
            }
        }
        Command::Status | Command::Check => {
            let header = vec![
                "endpoint", "id", "role", "term", "leader", "commit", "applied", "voters",
                "learners",
            ];
            let mut rows = Vec::new();
            let mut leaders = Vec::new();
            for endpoint in &args.endpoints {
                let one = ClientOptions {
                    retry_timeout: Duration::ZERO,
                    ..options.clone()
                };
                let status = Client::new(vec![endpoint.clone()], one).and_then(|mut c| c.status());
                let row = match status {
                    Ok(fields) => {
                        let get = |k: &str| {
                            fields
                                .iter()
                                .find(|(n, _)| n == k)
                                .map_or("-".to_string(), |(_, v)| v.clone())
                        };
                        if get("leader") != "-" {
                            leaders.push(get("leader"));
                        }
                        let mut row = vec![endpoint.clone()];
                        row.extend(header[1..].iter().map(|k| get(k)));
                        row
                    }
                    Err(err) => {
                        let mut row =
                            vec![endpoint.clone(), "-".into(), format!("unreachable ({err})")];
                        row.extend(std::iter::repeat_n("-".to_string(), header.len() - 3));
                        row
                    }
                };
                rows.push(row);
            }
            if matches!(args.command, Command::Check) && leaders.is_empty() {
                print_rows(&header, &rows, args.json);
                return Ok(Outcome::Refused("no node knows a leader".into()));
            }
            done(header, rows)
        }
        Command::Members => {
            let reply = client()?.execute(&Request::Member(Member::List))?;
            let Reply::Members(list) = reply else {
                return Err(ClientError::Protocol(format!("unexpected reply {reply:?}")));
            };
            let rows = list
                .iter()
                .filter_map(|m| crate::node::replica::parse_member(m))
                .map(|(spec, voter)| {
                    vec![
                        spec.id.clone(),
                        spec.host.clone(),
                        spec.raft_port.to_string(),
                        spec.client_port.to_string(),
                        if voter { "voter" } else { "learner" }.into(),
                    ]
                })
                .collect();
            done(vec!["id", "host", "raft_port", "client_port", "role"], rows)
        }
        Command::Member { change } => {
            let request = match change {
                MemberCommand::Add { member, learner } => match MemberSpec::parse(member) {
                    Ok(member) => Request::Member(Member::Add {
                        member,
                        learner: *learner,
                        incarnation: None,
                    }),
                    Err(err) => return Ok(Outcome::Refused(err.to_string())),
                },
                MemberCommand::Promote { id } => {
                    Request::Member(Member::Promote { id: id.clone() })
                }
                MemberCommand::Remove { id } => Request::Member(Member::Remove { id: id.clone() }),
            };
            refused(ok_reply(client()?.execute(&request)))
        }
        Command::Transfer { id } => {
            let request = Request::Transfer(Transfer { target: id.clone() });
            refused(ok_reply(client()?.execute(&request)))
        }
    }
}

fn ok_reply(reply: Result<Reply, ClientError>) -> Result<Outcome, ClientError> {
    match reply? {
        Reply::Ok => Ok(Outcome::Done {
            rows: vec![vec!["OK".into()]],
            header: vec!["result"],
        }),
        other => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
    }
}

fn print_rows(header: &[&str], rows: &[Vec<String>], json: bool) {
    if json {
        let objects: Vec<String> = rows
            .iter()
            .map(|row| {
                let pairs: Vec<(&str, &str)> = header
                    .iter()
                    .copied()
                    .zip(row.iter().map(String::as_str))
                    .collect();
                json_object(&pairs)
            })
            .collect();
        println!("[{}]", objects.join(","));
        return;
    }
    if header.is_empty() {
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    if header.len() > 1 {
        println!("{}", line(header.to_vec()));
    }
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// A flat JSON object of strings (numbers stay strings: the protocol's words).
fn json_object(pairs: &[(&str, &str)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

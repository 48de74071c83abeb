//! `MEMBER LIST`, `MEMBER ADD <id>:<host>:<raft_port>:<client_port> [learner]`,
//! `MEMBER PROMOTE <id>`, `MEMBER REMOVE <id>`: membership, changed through
//! the leader (followers redirect like SET).

use super::{Args, ParseError};

/// A member as the protocol names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub id: String,
    pub host: String,
    pub raft_port: u16,
    pub client_port: u16,
}

impl MemberSpec {
    /// Parses `<id>:<host>:<raft_port>:<client_port>` (as in `--peers`).
    pub fn parse(spec: &str) -> Result<MemberSpec, ParseError> {
        let bad = || {
            ParseError::BadArg(format!(
                "member '{spec}' is not id:host:raft_port:client_port"
            ))
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let [id, host, raft, client] = parts.as_slice() else {
            return Err(bad());
        };
        if id.is_empty() || host.is_empty() {
            return Err(bad());
        }
        Ok(MemberSpec {
            id: id.to_string(),
            host: host.to_string(),
            raft_port: raft.parse().map_err(|_| bad())?,
            client_port: client.parse().map_err(|_| bad())?,
        })
    }

    pub fn raft_addr(&self) -> String {
        format!("{}:{}", self.host, self.raft_port)
    }

    pub fn client_addr(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }
}

impl std::fmt::Display for MemberSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.id, self.host, self.raft_port, self.client_port
        )
    }
}

/// A membership command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    List,
    /// `incarnation` (`incarnation=<hex>`, sent by `--join`) names the
    /// joining node's life, so that it votes only as this membership.
    Add {
        member: MemberSpec,
        learner: bool,
        incarnation: Option<u64>,
    },
    Promote {
        id: String,
    },
    Remove {
        id: String,
    },
}

fn word<'a>(args: &mut Args<'a>) -> Option<&'a str> {
    args.next_token().and_then(|t| std::str::from_utf8(t).ok())
}

impl Member {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Member, ParseError> {
        let sub = word(args).ok_or(ParseError::WrongArgs("MEMBER"))?;
        let member = match sub.to_ascii_uppercase().as_str() {
            "LIST" => Member::List,
            "ADD" => {
                let spec = word(args).ok_or(ParseError::WrongArgs("MEMBER ADD"))?;
                let member = MemberSpec::parse(spec)?;
                let (mut learner, mut incarnation) = (false, None);
                while let Some(w) = word(args) {
                    if w.eq_ignore_ascii_case("learner") {
                        learner = true;
                    } else if let Some(hex) = w.strip_prefix("incarnation=") {
                        let inc = u64::from_str_radix(hex, 16).map_err(|_| {
                            ParseError::BadArg(format!("incarnation '{hex}' is not hexadecimal"))
                        })?;
                        incarnation = Some(inc);
                    } else {
                        return Err(ParseError::BadArg(format!(
                            "expected 'learner' after the member, got '{w}'"
                        )));
                    }
                }
                Member::Add {
                    member,
                    learner,
                    incarnation,
                }
            }
            "PROMOTE" => Member::Promote {
                id: word(args)
                    .ok_or(ParseError::WrongArgs("MEMBER PROMOTE"))?
                    .to_string(),
            },
            "REMOVE" => Member::Remove {
                id: word(args)
                    .ok_or(ParseError::WrongArgs("MEMBER REMOVE"))?
                    .to_string(),
            },
            other => {
                return Err(ParseError::BadArg(format!(
                    "unknown MEMBER subcommand '{other}' (LIST, ADD, PROMOTE, REMOVE)"
                )));
            }
        };
        args.finish("MEMBER")?;
        Ok(member)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let line = match self {
            Member::List => "MEMBER LIST".to_string(),
            Member::Add {
                member,
                learner,
                incarnation,
            } => {
                let mut line = format!("MEMBER ADD {member}");
                if *learner {
                    line.push_str(" learner");
                }
                if let Some(inc) = incarnation {
                    line.push_str(&format!(" incarnation={inc:x}"));
                }
                line
            }
            Member::Promote { id } => format!("MEMBER PROMOTE {id}"),
            Member::Remove { id } => format!("MEMBER REMOVE {id}"),
        };
        out.extend_from_slice(line.as_bytes());
    }
}

//! `SCAN <limit> [<prefix> [<after>]]`: keys in byte order that start with
//! `<prefix>` (`*`: every key), strictly after `<after>`, at most `<limit>`
//! (1..=10000). Linearizable like `GET`; every entry as of one revision.
//! Reply: `KEYS <n> <revision> <more>` then n lines `<key> <mod_rev> <value>`.

use super::{Args, ParseError};
use crate::types::LogIndex;

/// Most keys one SCAN may ask for.
pub const MAX_SCAN_LIMIT: usize = 10_000;

/// List keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub limit: usize,
    /// `None`: every key.
    pub prefix: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

impl Scan {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Scan, ParseError> {
        let limit = args.number("SCAN", "limit")?;
        if limit == 0 || limit > MAX_SCAN_LIMIT as u64 {
            return Err(ParseError::BadLimit);
        }
        let prefix = match args.is_done() {
            true => None,
            false => Some(args.key("SCAN")?),
        };
        let after = match args.is_done() {
            true => None,
            false => Some(args.key("SCAN")?),
        };
        args.finish("SCAN")?;
        Ok(Scan {
            limit: limit as usize,
            prefix: prefix.filter(|p| p != b"*"),
            after,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("SCAN {}", self.limit).as_bytes());
        if self.prefix.is_some() || self.after.is_some() {
            out.push(b' ');
            out.extend_from_slice(self.prefix.as_deref().unwrap_or(b"*"));
        }
        if let Some(after) = &self.after {
            out.push(b' ');
            out.extend_from_slice(after);
        }
    }
}

/// One page of a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// The store's revision every entry is as of.
    pub revision: LogIndex,
    /// Keys remain after the last one.
    pub more: bool,
    /// Key, mod_rev, value.
    pub entries: Vec<(Vec<u8>, LogIndex, Vec<u8>)>,
}

impl ScanPage {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!(
                "KEYS {} {} {}",
                self.entries.len(),
                self.revision,
                u8::from(self.more)
            )
            .as_bytes(),
        );
        for (key, rev, value) in &self.entries {
            out.push(b'\n');
            out.extend_from_slice(key);
            out.extend_from_slice(format!(" {rev} ").as_bytes());
            out.extend_from_slice(value);
        }
    }

    /// Parses a `KEYS <n> <revision> <more>` header: the line count that
    /// follows and the page without its entries.
    pub fn parse_header(line: &[u8]) -> Option<(usize, ScanPage)> {
        let rest = std::str::from_utf8(line.strip_prefix(b"KEYS ")?).ok()?;
        let mut words = rest.trim_end_matches('\r').split(' ');
        let n = words.next()?.parse().ok()?;
        let revision = words.next()?.parse().ok()?;
        let more = match words.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let page = ScanPage {
            revision,
            more,
            entries: Vec::new(),
        };
        words.next().is_none().then_some((n, page))
    }

    /// Parses one `<key> <mod_rev> <value>` line of a page.
    pub fn parse_line(line: &[u8]) -> Option<(Vec<u8>, LogIndex, Vec<u8>)> {
        let mut args = Args { rest: Some(line) };
        let key = args.next_token()?.to_vec();
        let rev = std::str::from_utf8(args.next_token()?).ok()?.parse().ok()?;
        let value = args.remainder()?.to_vec();
        Some((key, rev, value))
    }
}

//! Port lists ("1,11,15,79,6000-6063") and the 65 536-bit set the XDP program reads.

use std::fmt;

use portsentry_common::PORT_BITMAP_WORDS;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PortListError {
    #[error("`{0}` is not a port number (1-65535)")]
    NotAPort(String),
    #[error("port 0 is not a valid port")]
    PortZero,
    #[error("range `{0}` is backwards (start > end)")]
    BackwardsRange(String),
    #[error("empty entry in port list (two commas in a row, or a trailing comma)")]
    Empty,
}

/// A set of ports as a bitmap: bit `p % 64` of word `p / 64`.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    words: Box<[u64; PORT_BITMAP_WORDS as usize]>,
}

impl Default for PortSet {
    fn default() -> Self {
        Self {
            words: Box::new([0; PORT_BITMAP_WORDS as usize]),
        }
    }
}

impl PortSet {
    /// Parses a comma-separated list of ports and `a-b` ranges. Whitespace around entries is
    /// allowed; every bad entry is an error (PortSentry silently ignored them).
    pub fn parse(list: &str) -> Result<Self, PortListError> {
        let mut set = Self::default();
        if list.trim().is_empty() {
            return Ok(set);
        }
        for entry in list.split(',') {
            set.add_entry(entry.trim())?;
        }
        Ok(set)
    }

    /// Adds one entry: a port or an `a-b` range.
    pub fn add_entry(&mut self, entry: &str) -> Result<(), PortListError> {
        if entry.is_empty() {
            return Err(PortListError::Empty);
        }
        match entry.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_port(a.trim())?, parse_port(b.trim())?);
                if a > b {
                    return Err(PortListError::BackwardsRange(entry.to_owned()));
                }
                self.insert_range(a, b);
            }
            None => self.insert(parse_port(entry)?),
        }
        Ok(())
    }

    pub fn insert(&mut self, port: u16) {
        self.words[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    pub fn insert_range(&mut self, first: u16, last: u16) {
        for p in first..=last {
            self.insert(p);
        }
    }

    pub fn remove(&mut self, port: u16) {
        self.words[usize::from(port >> 6)] &= !(1 << (port & 63));
    }

    pub fn contains(&self, port: u16) -> bool {
        self.words[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|p| self.contains(*p))
    }

    /// The bitmap words, as the XDP program's array holds them.
    pub fn words(&self) -> &[u64] {
        &self.words[..]
    }
}

fn parse_port(s: &str) -> Result<u16, PortListError> {
    match s.parse::<u16>() {
        Ok(0) => Err(PortListError::PortZero),
        Ok(p) => Ok(p),
        Err(_) => Err(PortListError::NotAPort(s.to_owned())),
    }
}

/// Compact form: "1,7,9,6000-6063".
impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut ports = self.iter().peekable();
        while let Some(start) = ports.next() {
            let mut end = start;
            while ports.peek() == Some(&(end.wrapping_add(1))) && end != u16::MAX {
                end = ports.next().unwrap_or(end);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortSet({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        let s = PortSet::parse(" 1, 11,79-81 ,65535").unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 11, 79, 80, 81, 65535]);
        assert_eq!(s.to_string(), "1,11,79-81,65535");
        assert_eq!(s.len(), 6);
        assert!(s.contains(80) && !s.contains(82));
    }

    #[test]
    fn rejects_bad_entries() {
        assert_eq!(PortSet::parse("1,,2"), Err(PortListError::Empty));
        assert_eq!(PortSet::parse("0"), Err(PortListError::PortZero));
        assert_eq!(
            PortSet::parse("70000"),
            Err(PortListError::NotAPort("70000".into()))
        );
        assert_eq!(
            PortSet::parse("9-3"),
            Err(PortListError::BackwardsRange("9-3".into()))
        );
        assert_eq!(
            PortSet::parse("ssh"),
            Err(PortListError::NotAPort("ssh".into()))
        );
        assert!(PortSet::parse("").unwrap().is_empty());
    }

    #[test]
    fn bitmap_layout_matches_the_xdp_program() {
        let s = PortSet::parse("65").unwrap();
        assert_eq!(s.words()[1], 1 << 1);
    }
}

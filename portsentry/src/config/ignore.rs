//! PortSentry-format ignore files: one IPv4/IPv6 address or CIDR per line, `#` comments.
//!
//! Parsed strictly, unlike PortSentry (which silently never matched entries with host bits set
//! and cut the last character of an unterminated line): every bad line is an error naming it.
//! Tolerated: blank lines, surrounding whitespace, CRLF line ends, a `#` comment after an entry.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::net::cidr::Cidr;

/// `PATH:LINE: message` (line 0: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for IgnoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for IgnoreError {}

/// Parses ignore-file text; `path` only names it in errors. Duplicates are kept once.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Cidr>, IgnoreError> {
    let mut out: Vec<Cidr> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let err = |message: String| IgnoreError {
            path: path.to_owned(),
            line,
            message,
        };
        if entry.split_whitespace().nth(1).is_some() {
            return Err(err(format!("`{entry}`: one address or network per line")));
        }
        if let Some((_, mask)) = entry.split_once('/') {
            if mask.contains('.') {
                return Err(err(format!(
                    "`{entry}`: dotted netmasks are not supported; write a prefix length such as /24"
                )));
            }
        }
        let cidr: Cidr = entry
            .parse()
            .map_err(|e: crate::net::cidr::CidrError| err(e.to_string()))?;
        if !out.contains(&cidr) {
            out.push(cidr);
        }
    }
    Ok(out)
}

/// Reads and parses an ignore file.
pub fn load(path: &Path) -> Result<Vec<Cidr>, IgnoreError> {
    let bytes = std::fs::read(path).map_err(|e| IgnoreError {
        path: path.to_owned(),
        line: 0,
        message: format!("cannot read the ignore file: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        IgnoreError {
            path: path.to_owned(),
            line,
            message: "not valid UTF-8 text".into(),
        }
    })?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> Result<Vec<String>, String> {
        parse(text, Path::new("ignore"))
            .map(|v| v.iter().map(Cidr::to_string).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_stock_file_and_friends_parse() {
        let stock = "# Put hosts in here you never want blocked. This includes the IP addresses\n\
                     # of all local interfaces on the protected host\n\
                     127.0.0.1/32\n0.0.0.0\n";
        assert_eq!(p(stock).unwrap(), ["127.0.0.1", "0.0.0.0"]);
        assert_eq!(
            p("10.0.0.0/8\r\n  2001:db8::/32  # lab\n::1\n192.168.1.7 # gw\n10.0.0.0/8\n\n")
                .unwrap(),
            ["10.0.0.0/8", "2001:db8::/32", "::1", "192.168.1.7"]
        );
        // No trailing newline: the last character is not cut (PortSentry's bug).
        assert_eq!(p("192.0.2.10").unwrap(), ["192.0.2.10"]);
        assert_eq!(p("0.0.0.0/0\n::/0").unwrap(), ["0.0.0.0/0", "::/0"]);
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        assert!(p("# ok\n10.0.0.1/8\n")
            .unwrap_err()
            .starts_with("ignore:2: `10.0.0.1/8` has host bits set"));
        assert!(p("10.0.0.0/33")
            .unwrap_err()
            .starts_with("ignore:1: `33` is not a valid prefix length"));
        assert!(p("\n\n::1/129").unwrap_err().starts_with("ignore:3:"));
        assert!(p("1.2.3.4 5.6.7.8")
            .unwrap_err()
            .contains("one address or network per line"));
        assert!(p("10.0.0.0/255.0.0.0")
            .unwrap_err()
            .contains("dotted netmasks"));
        assert!(p("host.example.com")
            .unwrap_err()
            .contains("not an IPv4 or IPv6 address"));
        assert!(p("10.0.0.0/").unwrap_err().starts_with("ignore:1:"));
    }

    #[test]
    fn unreadable_and_binary_files_are_errors() {
        let e = load(Path::new("/nonexistent/portsentry.ignore")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e
            .to_string()
            .starts_with("/nonexistent/portsentry.ignore: cannot read"));
        let f = std::env::temp_dir().join(format!("ps-ignore-{}", std::process::id()));
        std::fs::write(&f, b"10.0.0.1\n\xff\xfe\n").unwrap();
        assert_eq!(load(&f).unwrap_err().line, 2);
        std::fs::remove_file(&f).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
            if let Err(e) = parse(&text, Path::new("f")) {
                prop_assert!(e.line >= 1 && e.line <= text.split('\n').count());
            }
        }

        /// Address-like lines: valid ones parse, invalid ones name exactly their line.
        #[test]
        fn the_bad_line_is_named(
            lines in prop::collection::vec(
                "(#.*|[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,2})?|[0-9a-f:]{2,12}(/[0-9]{1,3})?| *)",
                1..12,
            )
        ) {
            let text = lines.join("\n");
            match parse(&text, Path::new("f")) {
                Ok(_) => {
                    for l in &lines {
                        let e = l.split('#').next().unwrap_or("").trim();
                        prop_assert!(e.is_empty() || e.parse::<Cidr>().is_ok(), "accepted bad line {l:?}");
                    }
                }
                Err(e) => {
                    let first_bad = lines.iter().position(|l| {
                        let e = l.split('#').next().unwrap_or("").trim();
                        !e.is_empty() && e.parse::<Cidr>().is_err()
                    });
                    prop_assert_eq!(Some(e.line - 1), first_bad);
                }
            }
        }
    }
}

//! Placeholder expansion for hook argv elements and the hosts.deny line. Values are pasted
//! as plain text into one string at a time: they can never add an argument, a line or a
//! placeholder of their own.

use crate::bans::BanNotice;

/// The values a ban's placeholders stand for, formatted once per response.
pub struct Placeholders<'a> {
    target: String,
    port: String,
    mode: &'static str,
    proto: &'static str,
    scan: &'a str,
}

impl<'a> Placeholders<'a> {
    pub fn new(ban: &'a BanNotice) -> Self {
        Self {
            target: ban.source.to_string(),
            port: ban.dst_port.to_string(),
            mode: ban.protocol.mode(),
            proto: ban.protocol.name(),
            scan: &ban.scan,
        }
    }

    /// For the hosts.deny line: an IPv6 target in brackets (`[2001:db8::1]`), the only way
    /// TCP wrappers (hosts_access(5)) match an IPv6 address; IPv4 as is.
    pub fn for_hosts_deny(ban: &'a BanNotice) -> Self {
        let target = match ban.source {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        Self {
            target,
            port: ban.dst_port.to_string(),
            mode: ban.protocol.mode(),
            proto: ban.protocol.name(),
            scan: &ban.scan,
        }
    }

    /// The placeholder `text` starts with: its length and value.
    fn lookup(&self, text: &str) -> Option<(usize, &str)> {
        let table: [(&str, &str); 8] = [
            ("$TARGET$", &self.target),
            ("{target}", &self.target),
            ("$PORT$", &self.port),
            ("{port}", &self.port),
            ("$MODE$", self.mode),
            ("{mode}", self.mode),
            ("{proto}", self.proto),
            ("{scan}", self.scan),
        ];
        table
            .into_iter()
            .find(|(key, _)| text.starts_with(key))
            .map(|(key, value)| (key.len(), value))
    }
}

/// Substitutes placeholders in one string, in a single left-to-right pass: substituted text is
/// never scanned again, so a value containing `{port}` stays literal.
pub fn expand(template: &str, values: &Placeholders) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(i) = rest.find(['$', '{']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        // Not a placeholder: keep the '$' or '{' (one byte, ASCII) and look further.
        let (len, value) = values.lookup(rest).unwrap_or((1, &rest[..1]));
        out.push_str(value);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// Expands each argv element separately: one element stays one element, whatever the values
/// contain; elements are never joined or split.
pub fn expand_argv(argv: &[String], values: &Placeholders) -> Vec<String> {
    argv.iter().map(|a| expand(a, values)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        detect::events::Protocol,
        hooks::tests::{argv, ban},
    };

    #[test]
    fn expand_substitutes_both_syntaxes_once() {
        let b = BanNotice {
            protocol: Protocol::Udp,
            ..ban("SYN")
        };
        let v = Placeholders::new(&b);
        assert_eq!(
            expand(
                "$TARGET$ {target} $PORT$ {port} $MODE$ {mode} {proto} {scan}",
                &v
            ),
            "192.0.2.7 192.0.2.7 31337 31337 udp udp UDP SYN"
        );
        assert_eq!(
            expand("{target}{port}é$PORT$$", &v),
            "192.0.2.731337é31337$"
        );
        assert_eq!(
            expand("{x} $X$ $TARGET {target {Target} $$ {{port}}", &v),
            "{x} $X$ $TARGET {target {Target} $$ {31337}"
        );
        let v6 = BanNotice {
            source: "2001:db8::1".parse().unwrap(),
            ..ban("")
        };
        assert_eq!(expand("{target}", &Placeholders::new(&v6)), "2001:db8::1");
        // TCP wrappers match IPv6 addresses only in brackets (hosts_access(5)).
        assert_eq!(
            expand("ALL: $TARGET$", &Placeholders::for_hosts_deny(&v6)),
            "ALL: [2001:db8::1]"
        );
        assert_eq!(
            expand("ALL: $TARGET$", &Placeholders::for_hosts_deny(&ban(""))),
            "ALL: 192.0.2.7"
        );
        // Substituted text is not scanned again.
        let nasty = ban("{port}$TARGET${scan}");
        assert_eq!(
            expand("<{scan}>", &Placeholders::new(&nasty)),
            "<{port}$TARGET${scan}>"
        );
    }

    #[test]
    fn expand_argv_keeps_one_element_per_element() {
        let b = ban("a b; c $(d) `e`");
        let out = expand_argv(
            &argv(&["/sbin/route", "add", "{scan}", "x {target} y", "$(z)"]),
            &Placeholders::new(&b),
        );
        assert_eq!(
            out,
            argv(&[
                "/sbin/route",
                "add",
                "a b; c $(d) `e`",
                "x 192.0.2.7 y",
                "$(z)"
            ])
        );
    }
}

//! From LAPI's decision stream to what the kernel tables need: ban these addresses and networks
//! for so long, lift those. Pure functions; the daemon applies the result.
//!
//! A community blocklist is a million decisions naming a handful of origins and scenarios:
//! each distinct text is allocated once and shared ([`Arc<str>`]), the decisions are read
//! borrowed from the answer, and duplicates are found by one sort.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use super::{
    godur::{self, Remaining},
    lapi::{Stream, StreamDecision},
};
pub use crate::bans::{FleetBan, FleetUpdate};
use crate::net::cidr::Cidr;

/// Why a decision is not one we enforce.
enum Skip {
    Kind(String),
    BadValue,
}

/// The target of an `Ip` or `Range` ban decision.
fn target(d: &StreamDecision<'_>) -> Result<Cidr, Skip> {
    if !d.kind.eq_ignore_ascii_case("ban") {
        return Err(Skip::Kind(format!("{}/{}", d.kind, d.scope)));
    }
    let value = d.value.trim();
    if d.scope.eq_ignore_ascii_case("ip") {
        value
            .parse::<IpAddr>()
            .map(Cidr::host)
            .map_err(|_| Skip::BadValue)
    } else if d.scope.eq_ignore_ascii_case("range") {
        let (addr, prefix) = value.split_once('/').ok_or(Skip::BadValue)?;
        let addr: IpAddr = addr.parse().map_err(|_| Skip::BadValue)?;
        let prefix: u8 = prefix.parse().map_err(|_| Skip::BadValue)?;
        Cidr::masked(addr, prefix).ok_or(Skip::BadValue)
    } else {
        Err(Skip::Kind(format!("{}/{}", d.kind, d.scope)))
    }
}

fn count(ignored: &mut BTreeMap<String, usize>, reason: String) {
    *ignored.entry(reason).or_default() += 1;
}

/// One shared copy of each distinct text.
#[derive(Default)]
struct Interner(HashMap<String, Arc<str>>);

impl Interner {
    fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(a) = self.0.get(text) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(text);
        self.0.insert(text.to_owned(), a.clone());
        a
    }
}

/// Classifies one stream answer.
pub fn classify(stream: Stream<'_>, startup: bool) -> FleetUpdate {
    let mut update = FleetUpdate {
        startup,
        ..Default::default()
    };
    let mut texts = Interner::default();
    let new = stream.new.unwrap_or_default();
    let mut bans: Vec<FleetBan> = Vec::with_capacity(new.len());
    for d in &new {
        let target = match target(d) {
            Ok(t) => t,
            Err(Skip::Kind(k)) => {
                count(&mut update.ignored, k);
                continue;
            }
            Err(Skip::BadValue) => {
                count(&mut update.ignored, "bad value".into());
                continue;
            }
        };
        let remaining = match godur::parse(&d.duration) {
            Some(Remaining::For(r)) => r,
            Some(Remaining::Expired) => {
                count(&mut update.ignored, "expired".into());
                continue;
            }
            None => {
                count(&mut update.ignored, "bad duration".into());
                continue;
            }
        };
        bans.push(FleetBan {
            target,
            remaining,
            origin: texts.get(&d.origin),
            scenario: texts.get(&d.scenario),
        });
    }
    drop(new);
    // Several decisions may name one target: keep the longest (the first listed of equals).
    // A stable sort by target, longest first, then the first of each target.
    bans.sort_by(|a, b| {
        (a.target.addr, a.target.prefix, b.remaining).cmp(&(
            b.target.addr,
            b.target.prefix,
            a.remaining,
        ))
    });
    bans.dedup_by(|later, first| later.target == first.target);
    let listed = |t: &Cidr| {
        bans.binary_search_by(|b| (b.target.addr, b.target.prefix).cmp(&(t.addr, t.prefix)))
            .is_ok()
    };
    let mut lifted: Vec<Cidr> = stream
        .deleted
        .unwrap_or_default()
        .iter()
        .filter_map(|d| target(d).ok())
        // The stream is per value: a target both deleted and new is still banned.
        .filter(|t| !listed(t))
        .collect();
    lifted.sort_by_key(|c| (c.addr, c.prefix));
    lifted.dedup();
    update.bans = bans;
    update.lifted = lifted;
    update
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(json: &str) -> Stream<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn empty_streams_are_null_not_lists() {
        let u = classify(stream(r#"{"deleted":null,"new":null}"#), false);
        assert!(u.is_empty());
        assert!(!classify(stream(r#"{"deleted":null,"new":null}"#), true).is_empty());
    }

    #[test]
    fn ip_and_range_bans_v4_and_v6() {
        // Copied from a real LAPI 1.4.6 answer.
        let u = classify(
            stream(
                r#"{"deleted":null,"new":[
 {"duration":"59m58.805132052s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'm1'","scope":"Ip","type":"ban","value":"1.2.3.4"},
 {"duration":"1h59m58.80513067s","id":3,"origin":"cscli","scenario":"manual 'ban' from 'm1'","scope":"Ip","type":"ban","value":"2001:db8::1"},
 {"duration":"3h59m58.805129969s","id":2,"origin":"cscli","scenario":"manual 'ban' from 'm1'","scope":"Range","type":"ban","value":"10.1.0.0/16"},
 {"duration":"3h59m59.80512712s","id":4,"origin":"cscli","scenario":"manual 'ban' from 'm1'","scope":"Range","type":"ban","value":"2001:db8:1::/48"}]}"#,
            ),
            true,
        );
        let targets: Vec<String> = u.bans.iter().map(|b| b.target.to_string()).collect();
        assert_eq!(
            targets,
            ["1.2.3.4", "10.1.0.0/16", "2001:db8::1", "2001:db8:1::/48"]
        );
        assert_eq!(u.bans[0].remaining.as_secs(), 3598);
        assert_eq!(&*u.bans[0].origin, "cscli");
        assert!(u.ignored.is_empty());
    }

    #[test]
    fn other_types_scopes_and_junk_are_counted_not_enforced() {
        let u = classify(
            stream(
                r#"{"new":[
 {"duration":"1h","scope":"Ip","type":"captcha","value":"1.2.3.4"},
 {"duration":"1h","scope":"Country","type":"ban","value":"XX"},
 {"duration":"1h","scope":"Ip","type":"ban","value":"not-an-ip"},
 {"duration":"1h","scope":"Range","type":"ban","value":"10.0.0.0/99"},
 {"duration":"-2s","scope":"Ip","type":"ban","value":"1.2.3.5"},
 {"duration":"soon","scope":"Ip","type":"ban","value":"1.2.3.6"},
 {"scope":"ip","type":"BAN","value":"1.2.3.7","duration":"5m"},
 {}]}"#,
            ),
            false,
        );
        assert_eq!(u.bans.len(), 1, "{u:?}");
        assert_eq!(u.bans[0].target.to_string(), "1.2.3.7");
        let ignored: Vec<(&str, usize)> = u.ignored.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            ignored,
            [
                ("/", 1),
                ("bad duration", 1),
                ("bad value", 2),
                ("ban/Country", 1),
                ("captcha/Ip", 1),
                ("expired", 1)
            ]
        );
    }

    #[test]
    fn duplicates_keep_the_longest_and_new_beats_deleted() {
        let u = classify(
            stream(
                r#"{
 "new":[{"duration":"1h","scope":"Ip","type":"ban","value":"1.2.3.4"},
        {"duration":"3h","scope":"Ip","type":"ban","value":"1.2.3.4"},
        {"duration":"2h","scope":"Range","type":"ban","value":"10.1.2.3/16"}],
 "deleted":[{"duration":"-1s","scope":"Ip","type":"ban","value":"1.2.3.4"},
            {"duration":"-1s","scope":"Ip","type":"ban","value":"5.6.7.8"},
            {"duration":"-1s","scope":"Ip","type":"ban","value":"5.6.7.8"},
            {"duration":"-1s","scope":"Range","type":"ban","value":"2001:db8::/32"}]}"#,
            ),
            false,
        );
        assert_eq!(u.bans.len(), 2);
        assert_eq!(u.bans[0].remaining.as_secs(), 3 * 3600);
        assert_eq!(
            u.bans[1].target.to_string(),
            "10.1.0.0/16",
            "host bits are cleared"
        );
        let lifted: Vec<String> = u.lifted.iter().map(ToString::to_string).collect();
        assert_eq!(lifted, ["5.6.7.8", "2001:db8::/32"]);
    }

    #[test]
    fn equal_durations_keep_the_first_listed_and_texts_are_shared() {
        let u = classify(
            stream(
                r#"{"new":[
 {"duration":"1h","origin":"CAPI","scenario":"a","scope":"Ip","type":"ban","value":"1.2.3.4"},
 {"duration":"1h","origin":"cscli","scenario":"b","scope":"Ip","type":"ban","value":"1.2.3.4"},
 {"duration":"2h","origin":"CAPI","scenario":"a\u0021","scope":"Ip","type":"ban","value":"1.2.3.5"},
 {"duration":"2h","origin":"CAPI","scenario":"a","scope":"Ip","type":"ban","value":"1.2.3.6"}]}"#,
            ),
            true,
        );
        let got: Vec<(String, &str, &str)> = u
            .bans
            .iter()
            .map(|b| (b.target.to_string(), &*b.origin, &*b.scenario))
            .collect();
        assert_eq!(
            got,
            [
                ("1.2.3.4".to_owned(), "CAPI", "a"),
                ("1.2.3.5".to_owned(), "CAPI", "a!"),
                ("1.2.3.6".to_owned(), "CAPI", "a"),
            ]
        );
        assert!(std::sync::Arc::ptr_eq(&u.bans[0].origin, &u.bans[2].origin));
        assert!(std::sync::Arc::ptr_eq(
            &u.bans[0].scenario,
            &u.bans[2].scenario
        ));
    }
}

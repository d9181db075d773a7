//! The `[crowdsec]` table's guarantees: its keys read, every rule between them is refused with
//! the key at fault named, the TLS keys need https:// and exclude the secrets.

use super::*;

#[test]
fn crowdsec_table() {
    let s = parse(
        "[crowdsec]\nlapi_url = \"http://10.0.0.1:8080/\"\napi_key = \"k\"\nupdate_frequency = \"500ms\"\nlogin = \"m\"\npassword = \"p\"\n",
    )
    .unwrap();
    let c = s.startup.crowdsec.as_ref().unwrap();
    assert_eq!(c.lapi_url, "http://10.0.0.1:8080");
    assert_eq!(c.update_frequency, Duration::from_millis(500));
    assert!(c.is_bouncer() && c.is_machine());
    assert_eq!(c.scenario, "portsentry/port-scan");
    let shown = render(&s);
    assert!(
        shown.contains("api_key = \"(hidden)\"") && !shown.contains("= \"k\""),
        "{shown}"
    );
    assert!(!shown.contains("\"p\""), "{shown}");
    assert!(parse("").unwrap().startup.crowdsec.is_none());
}

#[test]
fn crowdsec_errors() {
    assert!(err("[crowdsec]\napi_key = \"k\"").contains("key `crowdsec.lapi_url`: is required"));
    assert!(
        err("[crowdsec]\nlapi_url = \"10.0.0.1:8080\"\napi_key = \"k\"").contains(
            ":2:12: key `crowdsec.lapi_url`: `10.0.0.1:8080` is not an http:// or https:// URL"
        )
    );
    assert!(err("[crowdsec]\nlapi_url = \"http://x\"").contains("nothing to do"));
    assert!(err("[crowdsec]\nlapi_url = \"http://x\"\nlogin = \"m\"")
        .contains("`login` and `password` go together"));
    assert!(
        err("[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\napi_key_file = \"/k\"")
            .contains("exclude each other")
    );
    assert!(err(
        "[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\nupdate_frequency = \"1ms\""
    )
    .contains(":4:20: key `crowdsec.update_frequency`: must be a duration of at least 100ms"));
    assert!(err("[crowdsec]\nlapi_url = \"http://x\"\napikey = \"k\"")
        .contains(":3:1: key `crowdsec.apikey`: unknown key (did you mean `crowdsec.api_key`?)"));
}

#[test]
fn crowdsec_tls_key_rules() {
    let https = "[crowdsec]\nlapi_url = \"https://lapi:8080\"\n";
    // A certificate without its key, and the other way round: the line of the key that is set.
    let e = err(&format!("{https}cert_path = \"/c.pem\"\n"));
    assert!(
        e.contains(":3:13: key `crowdsec.cert_path`: `crowdsec.cert_path` and `crowdsec.key_path` go together: set `crowdsec.key_path` too"),
        "{e}"
    );
    let e = err(&format!("{https}api_key = \"k\"\nkey_path = \"/k.pem\"\n"));
    assert!(
        e.contains(":4:12: key `crowdsec.key_path`: ")
            && e.contains("set `crowdsec.cert_path` too"),
        "{e}"
    );
    // A certificate alone does both roles; with a key or a password it is ambiguous.
    let c = parse(&format!(
        "{https}cert_path = \"c.pem\"\nkey_path = \"k.pem\"\n"
    ))
    .unwrap()
    .startup
    .crowdsec
    .unwrap();
    assert!(c.is_bouncer() && c.is_machine());
    let e = err(&format!(
        "{https}cert_path = \"/c\"\nkey_path = \"/k\"\ncredentials_file = \"/m.yaml\"\n"
    ));
    assert!(
        e.contains(":3:13: key `crowdsec.cert_path`: `crowdsec.cert_path` and `crowdsec.credentials_file` exclude each other"),
        "{e}"
    );
    // TLS keys need https://.
    for (line, key) in [
        ("ca_cert_path = \"/ca.pem\"", "ca_cert_path:4:16"),
        ("insecure_skip_verify = true", "insecure_skip_verify:4:24"),
    ] {
        let e = err(&format!(
            "[crowdsec]\nlapi_url = \"http://lapi:8080\"\napi_key = \"k\"\n{line}\n"
        ));
        let (key, at) = key.split_once(':').unwrap();
        assert!(
            e.contains(&format!(":{at}: key `crowdsec.{key}`: needs an https:// `crowdsec.lapi_url` (it is `http://lapi:8080`)")),
            "{e}"
        );
    }
    let e = err(&format!(
        "{https}api_key = \"k\"\nca_cert_path = \"/ca\"\ninsecure_skip_verify = true\n"
    ));
    assert!(
        e.contains(
            "`crowdsec.insecure_skip_verify` and `crowdsec.ca_cert_path` exclude each other"
        ),
        "{e}"
    );
    assert!(err(&format!(
        "{https}api_key = \"k\"\ninsecure_skip_verify = 1\n"
    ))
    .contains(":4:24: key `crowdsec.insecure_skip_verify`: "),);
}

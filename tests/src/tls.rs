//! Throwaway certificates for the TLS tests, made by the `openssl` command (Debian package
//! `openssl`) in a test directory: a CA ([`make_ca`]) and certificates it signs ([`issue`]),
//! all P-256 and valid for a day. The LAPI (`crowdsec`) and the SMTP sink (`sinks`) use them.

use anyhow::Result;

use crate::{lab::TempDir, staged};

/// The key options of every key made here: P-256, unencrypted.
const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// `openssl ARGS` in `dir`; fails with its output.
pub fn openssl(dir: &TempDir, args: &[&str]) -> Result<()> {
    staged::stdout_of(
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir.path),
        &format!("openssl {} (Debian package `openssl`)", args.join(" ")),
    )?;
    Ok(())
}

/// A self-signed CA in `dir` (`ca.key`, `ca.pem`) named `/O=portsentry tests/CN=NAME`.
pub fn make_ca(dir: &TempDir, name: &str) -> Result<()> {
    let subject = format!("/O=portsentry tests/CN={name}");
    let mut ca = vec!["req", "-x509"];
    ca.extend(EC);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca)
}

/// A key and certificate in `dir` (`NAME.key`, `NAME.pem`) for `subject`, signed by the CA
/// [`make_ca`] made there, with the extensions in `ext` (an openssl extfile's lines).
pub fn issue(dir: &TempDir, name: &str, subject: &str, ext: &str) -> Result<()> {
    let (key, csr, pem, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    dir.write(&extfile, ext);
    let mut req = vec!["req"];
    req.extend(EC);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(dir, &req)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &extfile,
            "-out",
            &pem,
        ],
    )
}
